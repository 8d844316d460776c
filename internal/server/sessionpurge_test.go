package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	idgen "github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
)

// TestPurgeSessions: the purge the server runs hourly deletes the sessions
// that ended more than a day ago, in batches, and keeps live sessions,
// recently ended ones and API tokens.
func TestPurgeSessions(t *testing.T) {
	t.Parallel()
	// A store of its own: a running server purges at start too, and would
	// race this test for the rows.
	st, ctx := sqlitetest.Store(t), t.Context()
	gen := idgen.New(1)
	now := time.Now().UTC()
	ptr := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	insert := func(kind string, expires, revoked *time.Time) int64 {
		t.Helper()
		id := gen.Next()
		row := store.AuthToken{ID: id, Kind: kind, Name: "n", Role: "viewer", Subject: "s",
			Hash: fmt.Sprintf("h%d", id), CreatedAt: now.Add(-72 * time.Hour), ExpiresAt: expires, RevokedAt: revoked}
		if err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error { return tx.AuthTokenInsert(ctx, row) }); err != nil {
			t.Fatal(err)
		}
		return id
	}
	const old = 1200 // more than one batch
	for range old / 2 {
		insert(store.TokenSession, ptr(-48*time.Hour), nil)
		insert(store.TokenSession, ptr(time.Hour), ptr(-30*time.Hour))
	}
	keep := []int64{
		insert(store.TokenSession, ptr(time.Hour), nil),                // live
		insert(store.TokenSession, ptr(-time.Hour), nil),               // expired an hour ago
		insert(store.TokenSession, ptr(time.Hour), ptr(-time.Hour)),    // revoked an hour ago
		insert(store.TokenAPI, ptr(-48*time.Hour), ptr(-48*time.Hour)), // an API token
	}
	n, err := server.PurgeSessions(ctx, st, now.Add(-server.SessionPurgeAfter))
	if err != nil || n != old {
		t.Fatalf("PurgeSessions = %d, %v; want %d, nil", n, err, old)
	}
	for _, id := range keep {
		if err := st.Read(ctx, func(q store.Querier) error { _, err := q.AuthTokenGet(ctx, id); return err }); err != nil {
			t.Errorf("token %d: %v; want it kept", id, err)
		}
	}
	if n, err := server.PurgeSessions(ctx, st, now.Add(-server.SessionPurgeAfter)); err != nil || n != 0 {
		t.Fatalf("second PurgeSessions = %d, %v; want 0, nil", n, err)
	}
}
