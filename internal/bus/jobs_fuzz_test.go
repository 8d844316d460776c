package bus

import (
	"encoding/json"
	"testing"
)

// The query and materialization job codecs: any bytes give a job or an
// error, never a panic; a decoded job encodes to bytes that decode to the
// same job (what the relay publishes is what a worker reads).
func FuzzDecodeQueryJob(f *testing.F) {
	for _, s := range []string{
		`{"jobId":"j","payload":{"queryUuid":"q"}}`,
		`{"jobId":"j","payload":{"queryUuid":"q"},"traceHeader":"00-ab-cd-01"}`,
		`{"jobId":"","payload":{}}`, `{"x":1}`, `[]`, ``, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := DecodeQueryJob(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("a decoded job does not encode: %v", err)
		}
		again, err := DecodeQueryJob(out)
		if err != nil || again != j {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", b, again, err, j)
		}
	})
}

func FuzzDecodePreAggBuildJob(f *testing.F) {
	for _, s := range []string{
		`{"jobId":"j","payload":{"materializationUuid":"m"}}`,
		`{"jobId":"j","payload":{"materializationUuid":""}}`, `{"jobId":1}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := DecodePreAggBuildJob(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("a decoded job does not encode: %v", err)
		}
		again, err := DecodePreAggBuildJob(out)
		if err != nil || again != j {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", b, again, err, j)
		}
	})
}
