// parseJSON (static/js/api.js) keeps 64-bit ids exact and leaves every
// other value as JSON.parse reads it. Run by TestParseJSON (internal/ui).
import assert from "node:assert/strict";
import { parseJSON } from "../static/js/api.js";

const cases = [
  // ids beyond 2^53 become their exact digits
  ['{"execution_id":254902571227402241}', { execution_id: "254902571227402241" }],
  ['[9007199254740993,-9007199254740993]', ["9007199254740993", "-9007199254740993"]],
  ['{"a":{"b":[1234567890123456789]}}', { a: { b: ["1234567890123456789"] } }],
  // small numbers, floats and exponents are numbers still
  ['{"n":42,"f":1.5,"e":1e300,"neg":-3,"big_float":12345678901234567.5}', { n: 42, f: 1.5, e: 1e300, neg: -3, big_float: 12345678901234567.5 }],
  // digits inside strings (escaped quotes too) are never touched
  ['{"s":"id 254902571227402241","q":"a\\"254902571227402241\\"b","k":"\\\\"}', { s: "id 254902571227402241", q: 'a"254902571227402241"b', k: "\\" }],
  ['{"254902571227402241":1}', { "254902571227402241": 1 }],
  ["[true,false,null]", [true, false, null]],
  ['  {"x" : 254902571227402241 }  ', { x: "254902571227402241" }],
];
for (const [text, want] of cases) assert.deepEqual(parseJSON(text), want, text);
assert.throws(() => parseJSON('{"a":}'));
console.log(`ok ${cases.length} cases`);
