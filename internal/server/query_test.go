package server_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// waitQuery polls until the query leaves pending/queued/executing.
func waitQuery(t *testing.T, c *client.Client, project, uuid string, size int) api.QueryPage {
	t.Helper()
	var p api.QueryPage
	wait.For(t, 30*time.Second, func() error {
		var err error
		p, err = c.QueryGet(t.Context(), project, uuid, 1, size)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status == "pending" || p.Status == "queued" || p.Status == "executing" {
			return fmt.Errorf("query %s did not finish: %s", uuid, p.Status)
		}
		return nil
	})
	return p
}

// The in-process path (NATS_ENABLED=false) against a real PostgreSQL
// warehouse: submit, poll, page, cache hit, bad SQL, bad paging.
func TestQueryInProcess(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, func(c *config.Server) { c.Query.ResultsDir = t.TempDir() })
	ctx := t.Context()
	if _, err := h.API.ProjectPut(ctx, "wh", api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}
	sub, err := h.API.QuerySubmit(ctx, "wh", "select n, n * 2 as twice from generate_series(1, 1234) as n order by n", "", false)
	if err != nil || sub.CacheMetadata.CacheHit {
		t.Fatalf("submit = %+v, %v", sub, err)
	}
	p := waitQuery(t, h.API, "wh", sub.QueryUUID, 500)
	if p.Status != "ready" || p.TotalResults != 1234 || p.TotalPageCount != 3 || len(p.Rows) != 500 || p.NextPage == nil || *p.NextPage != 2 {
		t.Fatalf("first page = status %s total %d pages %d rows %d next %v", p.Status, p.TotalResults, p.TotalPageCount, len(p.Rows), p.NextPage)
	}
	last, err := h.API.QueryGet(ctx, "wh", sub.QueryUUID, 3, 500)
	if err != nil || len(last.Rows) != 234 || fmt.Sprint(last.Rows[233]["n"]) != "1234" || last.NextPage != nil {
		t.Fatalf("last page = %d rows, last %v, %v", len(last.Rows), last.Rows[len(last.Rows)-1], err)
	}
	// The same SQL again: a cache hit, ready at once.
	hit, err := h.API.QuerySubmit(ctx, "wh", "select n, n * 2 as twice from generate_series(1, 1234) as n order by n", "", false)
	if err != nil || !hit.CacheMetadata.CacheHit {
		t.Fatalf("second submit = %+v, %v; want a cache hit", hit, err)
	}
	if p, _ := h.API.QueryGet(ctx, "wh", hit.QueryUUID, 1, 10); p.Status != "ready" || p.TotalResults != 1234 {
		t.Fatalf("cache hit poll = %+v", p)
	}
	// Past the end and out-of-range page sizes are 400s with the range.
	if _, err := h.API.QueryGet(ctx, "wh", sub.QueryUUID, 4, 500); client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "1 to 3") {
		t.Fatalf("page past the end: %v", err)
	}
	if _, err := h.API.QueryGet(ctx, "wh", sub.QueryUUID, 1, 5001); client.StatusOf(err) != 400 {
		t.Fatalf("pageSize 5001: %v", err)
	}
	// SQL the warehouse rejects: error status with its message.
	bad, _ := h.API.QuerySubmit(ctx, "wh", "select * from no_such_table_xyz", "", false)
	if p := waitQuery(t, h.API, "wh", bad.QueryUUID, 10); p.Status != "error" || !strings.Contains(p.Error, "no_such_table_xyz") {
		t.Fatalf("bad SQL = %+v", p)
	}
	// Unknown project: 404.
	if _, err := h.API.QuerySubmit(ctx, "nope", "select 1", "", false); client.StatusOf(err) != 404 {
		t.Fatalf("unknown project: %v", err)
	}
}

// Projects can be declared in a file (MILLRACE_PROJECTS_FILE), with secrets
// taken from the environment.
func TestProjectsFile(t *testing.T) {
	t.Setenv("MR_TEST_WAREHOUSE_URL", pgtest.URL())
	file := t.TempDir() + "/projects.yaml"
	if err := os.WriteFile(file, []byte("projects:\n  - name: fromfile\n    warehouse: {type: postgres, url: \"${MR_TEST_WAREHOUSE_URL}\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := servertest.Start(t, func(c *config.Server) { c.Query.ResultsDir = t.TempDir(); c.Query.ProjectsFile = file })
	sub, err := h.API.QuerySubmit(t.Context(), "fromfile", "select 7 as seven", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if p := waitQuery(t, h.API, "fromfile", sub.QueryUUID, 10); p.Status != "ready" || fmt.Sprint(p.Rows[0]["seven"]) != "7" {
		t.Fatalf("query on a file-declared project = %+v", p)
	}
}
