package worker

import (
	"context"
	"sync"
)

// slots is the pool every lane of a runtime runs its jobs in.
type slots struct {
	mu      sync.Mutex
	used    int
	size    int
	waiting int           // callers blocked on freed
	freed   chan struct{} // closed (and replaced) when a slot frees and someone waits
}

func newSlots(size int) *slots { return &slots{size: size, freed: make(chan struct{})} }

// wait blocks until more than reserve slots are free and returns how many
// are free beyond reserve; false when ctx ended first. A lane asks for no
// more messages than that, so a message never waits in a buffer for a slot
// while its ack wait runs down.
func (s *slots) wait(ctx context.Context, reserve int) (int, bool) {
	for ctx.Err() == nil {
		s.mu.Lock()
		free, freed := s.size-s.used-reserve, s.freed
		if free > 0 {
			s.mu.Unlock()
			return free, true
		}
		s.waiting++
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
		}
		s.mu.Lock()
		s.waiting--
		s.mu.Unlock()
	}
	return 0, false
}

// acquire takes a slot for a message already delivered, waiting for one if
// another lane took the last meanwhile. It ignores reserves: the message
// is ours and must run.
func (s *slots) acquire() {
	for {
		s.mu.Lock()
		if s.used < s.size {
			s.used++
			s.mu.Unlock()
			return
		}
		freed := s.freed
		s.waiting++
		s.mu.Unlock()
		<-freed
		s.mu.Lock()
		s.waiting--
		s.mu.Unlock()
	}
}

func (s *slots) release() {
	s.mu.Lock()
	s.used--
	if s.waiting > 0 {
		close(s.freed)
		s.freed = make(chan struct{})
	}
	s.mu.Unlock()
}
