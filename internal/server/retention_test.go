package server_test

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	idgen "github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/wait"
)

// TestRetentionAtStart: a server with MILLRACE_RETENTION runs retention as
// it starts: an execution that ended before the period goes (its API
// answers 404), a running one of the same age keeps its events.
func TestRetentionAtStart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "millrace.db")
	d, err := sqlitedriver.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	start, end := now.Add(-40*24*time.Hour), now.Add(-39*24*time.Hour)
	old, running := idgen.Floor(start)+1, idgen.Floor(start)+2
	tx, err := d.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []int64{old, running} {
		err = errors.Join(err,
			tx.ExecutionInsert(t.Context(), store.Execution{ExecutionID: id, CatalogID: 1, Path: "p", Version: 1, Status: api.ExecRunning, StartedAt: start}),
			tx.EventInsert(t.Context(), store.Event{EventID: idgen.Floor(start) + 10 + int64(i), ExecutionID: id, EventType: api.EvPlaybookStarted, CreatedAt: start}))
	}
	err = errors.Join(err, tx.ExecutionFinish(t.Context(), old, api.ExecCompleted, nil, "", end), tx.Commit(t.Context()), d.Close())
	if err != nil {
		t.Fatalf("prepare the database: %v", err)
	}

	logs := &syncBuffer{}
	h := servertest.StartWithLog(t, func(c *config.Server) {
		c.DatabaseURL = "sqlite:" + path
		c.Retention = 30 * 24 * time.Hour
	}, logs)
	wait.For(t, 30*time.Second, func() error {
		_, err := h.API.Execution(t.Context(), old)
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("GET the old execution: %v, want 404", err)
	})
	evs, err := h.API.Events(t.Context(), running)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events of the running execution = %d, %v; want its 1 event kept", len(evs), err)
	}
	// The run logs once its last, empty, batch is done: after the 404.
	wait.Until(t, 30*time.Second, "an INFO line for the retention run", func() bool {
		return strings.Contains(logs.String(), `msg="retention run"`) && strings.Contains(logs.String(), "executions_deleted=1")
	})
}
