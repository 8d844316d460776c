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

	t.Run("Off", func(t *testing.T) {
		t.Parallel()
		c := newStateCache(0, 1<<20)
		c.put(1, st(7, 1))
		if c.take(1, 7) != nil {
			t.Fatal("a cache of size 0 kept a state")
		}
		c.drop(1)
	})

	t.Run("BoundedByCountAndBytes", func(t *testing.T) {
		t.Parallel()
		c := newStateCache(3, 64*stateRowOverhead)
		for id := int64(1); id <= 5; id++ {
			c.put(id, st(1, 1))
		}
		if c.lru.Len() != 3 {
			t.Fatalf("%d entries, want the cap of 3", c.lru.Len())
		}
		// The oldest went first.
		for id, want := range map[int64]bool{1: false, 2: false, 3: true, 4: true, 5: true} {
			if got := c.take(id, 1) != nil; got != want {
				t.Errorf("state %d cached: %v, want %v (evict the oldest)", id, got, want)
			}
		}
		c2 := newStateCache(100, 64*stateRowOverhead)
		c2.put(1, st(1, 9)) // over an eighth of the budget: not kept
		if c2.lru.Len() != 0 || c2.bytes != 0 {
			t.Fatalf("kept a state over an eighth of the budget (%d entries, %d bytes)", c2.lru.Len(), c2.bytes)
		}
		for id := int64(1); id <= 20; id++ {
			c2.put(id, st(1, 8))
		}
		if c2.bytes > c2.maxBytes {
			t.Fatalf("%d bytes cached, budget %d", c2.bytes, c2.maxBytes)
		}
		// Over the byte budget, too, the oldest went first: the newest stayed.
		if keys := c2.lru.Keys(); len(keys) == 0 || keys[len(keys)-1] != 20 || keys[0] == 1 {
			t.Fatalf("cached %v, want the newest states up to the budget", keys)
		}
		for _, id := range c2.lru.Keys() {
			c2.drop(id)
		}
		if c2.bytes != 0 {
			t.Fatalf("%d bytes accounted after dropping everything", c2.bytes)
		}
	})
}
