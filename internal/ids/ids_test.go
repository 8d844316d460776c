package ids

import (
	"sync"
	"testing"
	"time"
)

func TestNextIsUniqueAndIncreasing(t *testing.T) {
	t.Parallel()
	g := New(7)
	prev := int64(0)
	for i := 0; i < 20000; i++ { // crosses the 4096-per-ms sequence limit
		id := g.Next()
		if id <= prev {
			t.Fatalf("id %d not greater than previous %d", id, prev)
		}
		prev = id
	}
}

func TestConcurrentUnique(t *testing.T) {
	t.Parallel()
	g := New(-1)
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]int64, 0, 2000)
			for i := 0; i < 2000; i++ {
				local = append(local, g.Next())
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate id %d", id)
				}
				seen[id] = true
			}
		}()
	}
	wg.Wait()
}

func TestTimeRoundTrip(t *testing.T) {
	t.Parallel()
	g := New(3)
	before := time.Now().Add(-time.Millisecond)
	id := g.Next()
	got := Time(id)
	if got.Before(before) || got.After(time.Now().Add(time.Millisecond)) {
		t.Fatalf("Time(%d) = %v, want near now", id, got)
	}
	if id <= 0 {
		t.Fatalf("id must be positive, got %d", id)
	}
	if node := int((id >> seqBits) & MaxNode); node != 3 {
		t.Fatalf("node = %d, want 3", node)
	}
}

// Floor and Span turn times into id bounds: every id issued at or after t
// is >= Floor(t), and ids issued d apart differ by at least Span(d).
func TestFloorAndSpan(t *testing.T) {
	t.Parallel()
	g := New(MaxNode)
	before := time.Now()
	id := g.Next()
	if id < Floor(before) || Time(Floor(before)).After(before) {
		t.Fatalf("id %d below Floor(%v) = %d", id, before, Floor(before))
	}
	if Floor(Epoch.Add(-time.Hour)) != 0 || Span(-time.Second) != 0 {
		t.Fatal("times before the epoch and negative spans must be 0")
	}
	if got := Time(Floor(before) + Span(time.Second)).Sub(Time(Floor(before))); got != time.Second {
		t.Fatalf("Span(1s) covers %v", got)
	}
}
