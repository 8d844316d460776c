// Package preaggtest runs a whole pre-aggregate stack for tests: an
// in-process server (servertest) with NATS_ENABLED=true, a PostgreSQL
// warehouse in a fresh schema seeded with an orders table, the project and
// its models, a warehouse worker and a pre-aggregate worker (real engine,
// real JetStream Object Store).
package preaggtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/preagg/engine"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker/preaggs"
	"github.com/millrace/millrace/internal/worker/queries"
)

// Models declares the orders model, with the pre-aggregate daily_status
// (order_count and revenue by status, per day).
const Models = `models:
  - name: orders
    table: orders
    dimensions:
      - {name: status, type: string}
      - {name: note, type: string}
      - {name: amount, type: number}
      - {name: created_at, type: timestamp}
    metrics:
      - {name: order_count, type: count}
      - {name: revenue, type: sum, sql: amount}
      - {name: avg_amount, type: average, sql: amount}
    pre_aggregates:
      - name: daily_status
        dimensions: [status]
        metrics: [order_count, revenue, avg_amount]
        time_dimension: created_at
        granularity: day
`

// Seed is the orders table: 600 rows over about 6 months.
const Seed = `
create table orders (id int primary key, status text not null, note text, amount numeric(10,2), created_at timestamp not null);
insert into orders select n, (array['new','paid','shipped'])[1 + n % 3], case when n % 5 = 0 then null else 'n' || (n % 7) end,
  (n % 50) + 0.25, timestamp '2024-01-01' + n * interval '7 hours' from generate_series(1, 600) as n`

// Stack is a running server with a project over the seeded warehouse.
type Stack struct {
	H            *servertest.Harness
	Project      string
	WarehouseURL string
}

// Options adjust Start.
type Options struct {
	Models string               // default Models
	Server func(*config.Server) // after the defaults Start sets
	// NoPreAggWorker leaves the pre-aggregate worker to the test
	// (StartPreAggWorker).
	NoPreAggWorker bool
}

// Start runs the stack until the test ends.
func Start(t *testing.T, o Options) *Stack {
	t.Helper()
	url := pgtest.NewSchema(t)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(t.Context(), Seed)
	_ = conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h := servertest.Start(t, func(c *config.Server) {
		c.Query.ResultsDir = t.TempDir()
		c.Query.NATSEnabled = true
		c.PreAgg.Dir = t.TempDir()
		if o.Server != nil {
			o.Server(c)
		}
	})
	s := &Stack{H: h, Project: "shop", WarehouseURL: url}
	if _, err := h.API.ProjectPut(t.Context(), s.Project, api.WarehouseConn{Type: "postgres", URL: url}); err != nil {
		t.Fatal(err)
	}
	models := o.Models
	if models == "" {
		models = Models
	}
	if _, err := h.API.ModelsPut(t.Context(), s.Project, []byte(models)); err != nil {
		t.Fatal(err)
	}
	s.startWarehouseWorker(t)
	if !o.NoPreAggWorker {
		s.StartPreAggWorker(t, nil)
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// run runs w until the test ends, or stop is called; stop waits for it.
func run(t *testing.T, w interface{ Run(context.Context) error }) (stop func()) {
	// Not t.Context(): the worker stops in its cleanup, before the
	// server's (registered earlier, run later).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func (s *Stack) startWarehouseWorker(t *testing.T) {
	t.Helper()
	cfg := s.H.Cfg
	w, err := queries.New(t.Context(), queries.Config{NATS: cfg.NATS.Bus("test-warehouse-worker"), Stream: cfg.Query.Stream,
		Subject: cfg.Query.Subject, Consumer: cfg.Query.Consumer, ServerURL: s.H.Srv.URL(),
		WorkerID: "wh-" + randHex(3), Concurrency: 8, ShutdownGrace: 5 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
}

// PreAggConfig is the pre-aggregate worker's configuration for this stack.
func (s *Stack) PreAggConfig(t *testing.T) preaggs.Config {
	cfg := s.H.Cfg
	p := cfg.PreAgg
	return preaggs.Config{NATS: cfg.NATS.Bus("test-pre-aggregate-worker"), Stream: p.Stream, QuerySubject: p.QuerySubject,
		BuildSubject: p.BuildSubject, Consumer: p.Consumer, Storage: cfg.NATS.Storage, Bucket: p.Bucket,
		Engine:           engine.Config{MemoryLimit: "256MB", Threads: 1, CacheDir: t.TempDir(), CacheMaxBytes: 64 << 20},
		BuildConcurrency: 1, ServerURL: s.H.Srv.URL(), WorkerID: "pa-" + randHex(3), Concurrency: 4, ShutdownGrace: 5 * time.Second}
}

// StartPreAggWorker runs a pre-aggregate worker (mod may adjust its
// configuration) and returns a function that stops it.
func (s *Stack) StartPreAggWorker(t *testing.T, mod func(*preaggs.Config)) (stop func()) {
	t.Helper()
	c := s.PreAggConfig(t)
	if mod != nil {
		mod(&c)
	}
	w, err := preaggs.New(t.Context(), c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return run(t, w)
}

// Info returns model/name's entry of the pre-aggregate list.
func (s *Stack) Info(t *testing.T, model, name string) api.PreAggInfo {
	t.Helper()
	list, err := s.H.API.PreAggregates(t.Context(), s.Project)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.Model == model && p.Name == name {
			return p
		}
	}
	t.Fatalf("no pre-aggregate %s/%s in %+v", model, name, list)
	return api.PreAggInfo{}
}

// WaitActive waits until model/name has an active build of its current
// definition (other than not, when given) and returns it.
func (s *Stack) WaitActive(t *testing.T, model, name, not string) api.PreAggBuild {
	t.Helper()
	var b api.PreAggBuild
	wait.For(t, 60*time.Second, func() error {
		p := s.Info(t, model, name)
		if p.Active == nil || p.ActiveOutdated || p.Active.BuildUUID == not {
			last := "none"
			if p.Last != nil {
				last = fmt.Sprintf("%s %s %s", p.Last.BuildUUID, p.Last.Status, p.Last.Error)
			}
			return fmt.Errorf("%s/%s has no new active build yet (last: %s)", model, name, last)
		}
		b = *p.Active
		return nil
	})
	return b
}

// Wait polls query uuid until it ends and returns its first page.
func (s *Stack) Wait(t *testing.T, uuid string) api.QueryPage {
	t.Helper()
	var page api.QueryPage
	wait.For(t, 60*time.Second, func() error {
		var err error
		page, err = s.H.API.QueryGet(t.Context(), s.Project, uuid, 1, 5000)
		if err != nil {
			return err
		}
		if !page.Status.Terminal() {
			return fmt.Errorf("query %s is %s", uuid, page.Status)
		}
		return nil
	})
	return page
}

// Rows renders a page's rows in order, one line each, for comparing two
// answers (numbers through their text: the same value prints the same).
func Rows(p api.QueryPage) string {
	var b strings.Builder
	for _, r := range p.Rows {
		for i, c := range p.Columns {
			if i > 0 {
				b.WriteString(" | ")
			}
			fmt.Fprint(&b, r[c.Name])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// WaitBuild waits until build uuid is no longer queued or building.
func (s *Stack) WaitBuild(t *testing.T, uuid string) api.PreAggBuild {
	t.Helper()
	var b api.PreAggBuild
	wait.For(t, 60*time.Second, func() error {
		var err error
		if b, err = s.H.API.PreAggBuild(t.Context(), s.Project, uuid); err != nil {
			return err
		}
		if b.Status == api.BuildQueued || b.Status == api.BuildBuilding {
			return fmt.Errorf("build %s is %s", uuid, b.Status)
		}
		return nil
	})
	return b
}
