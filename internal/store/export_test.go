package store

// Queued is how many callers wait in the committers' queues: tests use it
// to know that a batch will hold them all.
func (s *Store) Queued() int {
	n := 0
	for _, ch := range s.shards {
		n += len(ch)
	}
	return n
}
