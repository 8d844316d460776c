package bus

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A replicated memory stream is named a risk with the remedy; a file
// stream or a single replica is not.
func TestMemoryReplicasRisk(t *testing.T) {
	t.Parallel()
	if r := memoryReplicasRisk(jetstream.MemoryStorage, 3); !strings.Contains(r, "3 replicas") || !strings.Contains(r, "NATS_STORAGE=file") {
		t.Errorf("memory R3: %q, want the count and NATS_STORAGE=file", r)
	}
	for _, c := range []struct {
		s jetstream.StorageType
		n int
	}{{jetstream.MemoryStorage, 1}, {jetstream.FileStorage, 3}, {jetstream.FileStorage, 1}} {
		if r := memoryReplicasRisk(c.s, c.n); r != "" {
			t.Errorf("%s R%d: %q, want no risk", c.s, c.n, r)
		}
	}
}
