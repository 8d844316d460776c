package server

import (
	"context"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// Ended login sessions (expired or revoked) are deleted by the server, every
// SessionPurgeInterval, once they ended more than SessionPurgeAfter ago;
// API tokens are never deleted.
const (
	SessionPurgeInterval = time.Hour
	SessionPurgeAfter    = 24 * time.Hour
	// sessionPurgeBatch is how many sessions one transaction deletes.
	sessionPurgeBatch = 500
)

// PurgeSessions deletes the login sessions that ended (expired or were
// revoked) before before, sessionPurgeBatch per transaction until none is
// left, and returns how many it deleted.
func PurgeSessions(ctx context.Context, st *store.Store, before time.Time) (int, error) {
	total := 0
	for {
		var n int
		err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			var err error
			n, err = tx.AuthSessionsPurge(ctx, before, sessionPurgeBatch)
			return err
		})
		total += n
		if err != nil || n < sessionPurgeBatch {
			return total, err
		}
	}
}

// purgeSessions runs PurgeSessions at start and then every
// SessionPurgeInterval until ctx ends.
func (s *Server) purgeSessions(ctx context.Context) {
	t := time.NewTicker(SessionPurgeInterval)
	defer t.Stop()
	for {
		n, err := PurgeSessions(ctx, s.st, time.Now().Add(-SessionPurgeAfter))
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("purging ended login sessions", "error", err)
		case n > 0:
			s.log.Info("purged ended login sessions", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
