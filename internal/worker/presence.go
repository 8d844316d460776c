package worker

import (
	"context"
	"time"

	"github.com/millrace/millrace/internal/bus"
)

// beat publishes this worker's presence every bus.PresenceInterval until
// ctx ends, so servers can count the workers online per kind and pool and
// their busy slots (package monitor). A lost beat is replaced by the next.
func (r *Runtime) beat(ctx context.Context) {
	t := time.NewTicker(bus.PresenceInterval)
	defer t.Stop()
	for {
		p := bus.Presence{WorkerID: r.cfg.ID, Kind: r.kind.Name(), Pool: r.cfg.Pool, Slots: r.cfg.Concurrency, Busy: r.slots.busy(), At: time.Now().UTC()}
		if err := r.conn.PublishPresence(p); err != nil {
			r.log.Debug("presence beat not sent; servers may count this worker offline until the next", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// busy is how many slots are taken.
func (s *slots) busy() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}
