package sqlvalue

import (
	"encoding/json"
	"testing"
)

// A JSON column decodes to a value or an error, never a panic, and what
// decodes is JSON-friendly: it encodes again.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"id":9007199254740993}`, `[1,"a",null,true]`, `1e400`, `"\u0000"`, ``, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeJSON(b)
		if err != nil {
			return
		}
		if _, err := json.Marshal(JSON(v)); err != nil {
			t.Fatalf("%q decoded to %#v, which does not encode: %v", b, v, err)
		}
	})
}
