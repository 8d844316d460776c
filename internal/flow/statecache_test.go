package flow

import (
	"testing"

	"github.com/millrace/millrace/internal/store"
)

func TestStateCache(t *testing.T) {
	t.Parallel()
	st := func(rev int64, rows int) *runState {
		r := &run{cmds: make([]store.Command, rows), loops: map[int64]store.Loop{}}
		return r.state(rev)
	}

	t.Run("TakeOnlyAtTheSavedRevision", func(t *testing.T) {
		t.Parallel()
		c := newStateCache(10, 1<<20)
		c.put(1, st(7, 1))
		if c.take(1, 8) != nil {
			t.Fatal("took a state saved at revision 7 for revision 8")
		}
		if c.take(1, 7) != nil {
			t.Fatal("a mismatched take must drop the entry; it was still there")
		}
		c.put(1, st(7, 1))
		if c.take(1, 7) == nil || c.take(1, 7) != nil {
			t.Fatal("take must return the state once and remove it")
		}
	})

	t.Run("BoundedByCountAndBytes", func(t *testing.T) {
		t.Parallel()
		c := newStateCache(3, 64*stateRowOverhead)
		for id := int64(1); id <= 5; id++ {
			c.put(id, st(1, 1))
		}
		if len(c.m) != 3 {
			t.Fatalf("%d entries, want the cap of 3", len(c.m))
		}
		c2 := newStateCache(100, 64*stateRowOverhead)
		c2.put(1, st(1, 9)) // over an eighth of the budget: not kept
		if len(c2.m) != 0 || c2.bytes != 0 {
			t.Fatalf("kept a state over an eighth of the budget (%d entries, %d bytes)", len(c2.m), c2.bytes)
		}
		for id := int64(1); id <= 20; id++ {
			c2.put(id, st(1, 8))
		}
		if c2.bytes > c2.maxBytes {
			t.Fatalf("%d bytes cached, budget %d", c2.bytes, c2.maxBytes)
		}
		for id := range c2.m {
			c2.drop(id)
		}
		if c2.bytes != 0 {
			t.Fatalf("%d bytes accounted after dropping everything", c2.bytes)
		}
	})
}
