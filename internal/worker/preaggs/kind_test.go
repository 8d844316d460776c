package preaggs

import (
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/worker"
)

func TestDecodeTellsQueriesFromBuilds(t *testing.T) {
	t.Parallel()
	k := &kind{}
	j, err := k.Decode([]byte(`{"jobId": "j1", "payload": {"queryUuid": "q-1"}}`))
	if s, ok := j.(*serveJob); err != nil || !ok || s.uuid != "q-1" {
		t.Fatalf("query job = %#v, %v", j, err)
	}
	j, err = k.Decode([]byte(`{"jobId": "j2", "payload": {"materializationUuid": "b-1"}}`))
	if b, ok := j.(*buildJob); err != nil || !ok || b.uuid != "b-1" {
		t.Fatalf("build job = %#v, %v", j, err)
	}
	for _, bad := range []string{`{}`, `{"jobId": "j"}`, `{"jobId": "j", "payload": {"queryUuid": "q", "materializationUuid": "b"}}`, `nope`} {
		if j, err := k.Decode([]byte(bad)); err == nil || !strings.Contains(err.Error(), "neither a query job") {
			t.Errorf("Decode(%s) = %#v, %v; want it refused as poison", bad, j, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"jobId": "j1", "payload": {"queryUuid": "q-1"}}`, `{"jobId": "j2", "payload": {"materializationUuid": "b-1"}}`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	k := &kind{}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := k.Decode(data)
		if err != nil {
			return
		}
		switch j := j.(type) {
		case *serveJob:
			if j.uuid == "" {
				t.Fatalf("Decode(%q): a query job without its uuid", data)
			}
		case *buildJob:
			if j.uuid == "" {
				t.Fatalf("Decode(%q): a build job without its uuid", data)
			}
		default:
			t.Fatalf("Decode(%q) = %T", data, j)
		}
	})
}

// Builds are capped at PRE_AGGREGATE_BUILD_CONCURRENCY and never take the
// last slot; queries are not capped.
func TestLanes(t *testing.T) {
	t.Parallel()
	k := &kind{cfg: Config{Stream: "S", Consumer: "worker-pre-aggregate", BuildConcurrency: 2}}
	for _, c := range []struct{ concurrency, builds int }{{100, 2}, {3, 2}, {2, 1}, {1, 2}} {
		l := k.Lanes(c.concurrency)
		want := []worker.Lane{{Stream: "S", Consumer: "worker-pre-aggregate"}, {Stream: "S", Consumer: "worker-pre-aggregate-materialization", Max: c.builds}}
		if len(l) != 2 || l[0] != want[0] || l[1] != want[1] {
			t.Errorf("Lanes(%d) = %+v, want %+v", c.concurrency, l, want)
		}
	}
}
