package query_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/query"
	"github.com/millrace/millrace/internal/results"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
)

// A query the previous server run left pending (in-process mode keeps its
// work only in memory) ends with a clear error at the next start instead of
// being polled forever (review finding).
func TestRecoverInProcessQueries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := sqlitetest.Store(t)
	res, _ := results.Open(t.TempDir())
	svc := query.New(query.Config{}, st, ids.New(-1), nil, res, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	old := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	for _, uuid := range []string{"left-behind", "just-submitted"} {
		created := old
		if uuid == "just-submitted" {
			created = time.Now().UTC().Add(time.Minute) // after this run started
		}
		if err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			return tx.QueryInsert(ctx, store.Query{QueryUUID: uuid, ProjectID: 1, SQL: "select 1", Lane: "interactive",
				Status: api.QueryPending, CreatedAt: created, UpdatedAt: created})
		}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := svc.RecoverInProcess(ctx, time.Now().UTC())
	if err != nil || n != 1 {
		t.Fatalf("RecoverInProcess = %d, %v; want 1", n, err)
	}
	for uuid, want := range map[string]api.QueryStatus{"left-behind": api.QueryError, "just-submitted": api.QueryPending} {
		q, _ := store.ReadValue(ctx, st, func(qq store.Querier) (store.Query, error) { return qq.QueryGet(ctx, uuid) })
		if q.Status != want {
			t.Fatalf("%s is %s, want %s", uuid, q.Status, want)
		}
		if want == api.QueryError && !strings.Contains(q.Error, "run it again") {
			t.Fatalf("%s error %q does not tell the user what to do", uuid, q.Error)
		}
	}
}
