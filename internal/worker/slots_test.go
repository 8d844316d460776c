package worker

import (
	"context"
	"testing"
	"time"
)

func TestSlots(t *testing.T) {
	t.Parallel()
	s := newSlots(3)
	if free, ok := s.wait(t.Context(), 1); !ok || free != 2 {
		t.Fatalf("wait with reserve 1 on 3 free slots = %d, %v; want 2", free, ok)
	}
	s.acquire()
	s.acquire()
	// The reserve is left: a lane reserving one slot waits, one reserving
	// none goes ahead.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if free, ok := s.wait(ctx, 1); ok {
		t.Fatalf("wait with reserve 1 on 1 free slot returned %d free", free)
	}
	if free, ok := s.wait(t.Context(), 0); !ok || free != 1 {
		t.Fatalf("wait with reserve 0 on 1 free slot = %d, %v; want 1", free, ok)
	}
	s.acquire()
	got := make(chan int)
	go func() {
		s.acquire() // blocks: all three are taken
		free, _ := s.wait(t.Context(), 0)
		got <- free
	}()
	select {
	case <-got:
		t.Fatal("acquire did not wait for a free slot")
	case <-time.After(50 * time.Millisecond):
	}
	s.release()
	s.release()
	select {
	case free := <-got:
		if free != 1 {
			t.Fatalf("after two releases and one acquire, %d free; want 1", free)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a release did not wake the waiting acquire")
	}
}
