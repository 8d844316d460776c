package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/wait"
)

// Run returns only after every goroutine it started has ended: in-process
// queries still inside the warehouse when Run is told to stop are ended
// and recorded before the store closes, not left running against a
// closed store.
func TestRunWaitsForWhatItStarted(t *testing.T) {
	t.Parallel()
	cfg := servertest.Config(t)
	dbPath := filepath.Join(t.TempDir(), "run.db")
	cfg.DatabaseURL = "sqlite:" + dbPath
	cfg.Query.ResultsDir = t.TempDir()
	logs := &syncBuffer{}
	srv, err := server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()

	c := client.New(srv.URL())
	if _, err := c.ProjectPut(t.Context(), "wh", api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}
	marker := "run_waits_" + cfg.NATS.Stream // unique to this server
	var uuids []string
	for i := range 3 {
		sub, err := c.QuerySubmit(t.Context(), "wh", fmt.Sprintf("select pg_sleep(30) /* %s %d */", marker, i), "", false)
		if err != nil {
			t.Fatal(err)
		}
		uuids = append(uuids, sub.QueryUUID)
	}
	waitActive(t, marker, len(uuids))

	stop()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run = %v, want nil after its context ended", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20 s of its context ending")
	}
	// Run has returned, so nothing it started may still write: what the
	// store holds now is final.
	drv, err := sqlitedriver.Open(t.Context(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	for _, u := range uuids {
		q, err := store.ReadValue(t.Context(), drv, func(qq store.Querier) (store.Query, error) { return qq.QueryGet(t.Context(), u) })
		if err != nil {
			t.Fatal(err)
		}
		if q.Status == api.QueryPending {
			t.Errorf("query %s still pending after Run returned: its goroutine outlived Run", u)
		}
	}
	if strings.Contains(logs.String(), "closed") {
		t.Errorf("the server logged a \"closed\" error while stopping:\n%s", logs.String())
	}
}

// waitActive polls PostgreSQL until n statements carrying marker run.
func waitActive(t *testing.T, marker string, n int) {
	t.Helper()
	pg, err := pgx.Connect(t.Context(), pgtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(t.Context())
	wait.For(t, 30*time.Second, func() error {
		var active int
		err := pg.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND query LIKE 'select pg_sleep(30) /* '||$1||' %'`, marker).Scan(&active)
		if err == nil && active < n {
			err = fmt.Errorf("%d of %d queries running in PostgreSQL", active, n)
		}
		return err
	})
}
