package api_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/millrace/millrace/internal/api"
)

// The command payload a worker reads: any bytes give a payload or an
// error, never a panic, and a decoded payload survives a second trip
// unchanged (64-bit numbers included, as json.Number).
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		``, `null`, `{}`,
		`{"tool":{"kind":"noop"},"scope":{"execution_id":1,"workload":{"id":9007199254740993}}}`,
		`{"scope":{"results":{"a":[1,2,{"b":null}]},"context":{"x":"y"}}}`,
		`{"tool":{"kind":"shell","cmd":"echo"},"policy":{}}`, `[]`, `{"scope":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := api.DecodePayload(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			return // a tool config holding a value JSON cannot encode came from no encoder
		}
		again, err := api.DecodePayload(out)
		if err != nil {
			t.Fatalf("re-encoded payload %s does not decode: %v", out, err)
		}
		out2, _ := json.Marshal(again)
		if !reflect.DeepEqual(out, out2) {
			t.Fatalf("payload changed on a second trip:\n%s\n%s", out, out2)
		}
	})
}
