package query_test

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/query"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker/queries"
)

// Test tuning.
const (
	// waitLong bounds polls for work that runs (queries, workers starting).
	waitLong = 60 * time.Second
	// waitStop bounds how long PostgreSQL may take to stop a cancelled
	// query: a worker notices a cancel within a keepalive (2s) and the
	// driver then sends PostgreSQL a cancel request.
	waitStop = 15 * time.Second
	// minMaxConnections is what the concurrency test needs from the
	// warehouse: 100 sleeping queries plus everything else running in
	// parallel.
	minMaxConnections = 150
)

// paths runs fn as parallel subtests on both query paths.
func paths(t *testing.T, fn func(t *testing.T, natsEnabled bool)) {
	for _, natsEnabled := range []bool{false, true} {
		name := "inprocess"
		if natsEnabled {
			name = "nats"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, natsEnabled)
		})
	}
}

type opts struct {
	nats           bool
	queueTimeout   time.Duration // NATS_QUEUE_TIMEOUT_MS
	cacheStale     time.Duration // CACHE_STALE_TIME_SECONDS
	redeliverAfter time.Duration // MILLRACE_REDELIVER_AFTER_SECONDS
	staleWorker    time.Duration // MILLRACE_QUERY_STALE_WORKER_SECONDS
	// pgStore keeps the event store in PostgreSQL rather than in-memory
	// SQLite, which is many times slower under the race detector: for
	// tests that submit a thousand queries.
	pgStore bool
}

// bundle is one test's deployment: an in-process server on SQLite with
// embedded NATS, a project whose warehouse is the test PostgreSQL, and a
// connection to that warehouse to look at pg_stat_activity.
type bundle struct {
	t       *testing.T
	h       *servertest.Harness
	api     *client.Client
	project string
	pg      *pgx.Conn
	id      string
}

func setup(t *testing.T, o opts) *bundle {
	t.Helper()
	id := randHex(6)
	var db string
	if o.pgStore {
		db = pgtest.NewSchema(t)
	}
	h := servertest.Start(t, func(c *config.Server) {
		if db != "" {
			c.DatabaseURL = db
		}
		c.Query.NATSEnabled = o.nats
		c.Query.ResultsDir = t.TempDir()
		c.Query.Stream = "WQ_" + id
		c.Query.Subject = "wq" + id + ".jobs"
		c.Query.Consumer = "wq_" + id
		if o.queueTimeout > 0 {
			c.Query.QueueTimeout = o.queueTimeout
		}
		if o.cacheStale > 0 {
			c.Query.CacheStale = o.cacheStale
		}
		if o.redeliverAfter > 0 {
			c.RedeliverAfter = o.redeliverAfter
		}
		if o.staleWorker > 0 {
			c.Query.StaleWorker = o.staleWorker
		}
	})
	b := &bundle{t: t, h: h, api: h.API, project: "p_" + id, id: id}
	if _, err := b.api.ProjectPut(t.Context(), b.project, api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}
	pg, err := pgx.Connect(t.Context(), pgtest.URL())
	if err != nil {
		t.Fatalf("connect to the warehouse %s: %v", pgtest.URL(), err)
	}
	t.Cleanup(func() { _ = pg.Close(context.Background()) })
	b.pg = pg
	return b
}

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// startWorker runs an in-process warehouse worker until the test ends.
func (b *bundle) startWorker(concurrency int) {
	b.t.Helper()
	cfg := b.h.Cfg
	w, err := queries.New(b.t.Context(), queries.Config{NATS: cfg.NATS.Bus("test-warehouse-worker"),
		Stream: cfg.Query.Stream, Subject: cfg.Query.Subject, Consumer: cfg.Query.Consumer,
		ServerURL: b.h.Srv.URL(), WorkerID: "w-" + randHex(3), Concurrency: concurrency, ShutdownGrace: 5 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.t.Fatal(err)
	}
	// Not t.Context(): the worker stops in its cleanup, in order with the
	// server's, not before every cleanup.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	b.t.Cleanup(func() { cancel(); <-done })
}

// table creates a warehouse table of this test, dropped when it ends.
func (b *bundle) table(name, columns string) string {
	b.t.Helper()
	full := "mq_" + name + "_" + b.id
	b.exec("create table " + full + " (" + columns + ")")
	b.t.Cleanup(func() {
		pg, err := pgx.Connect(context.Background(), pgtest.URL())
		if err == nil {
			_, _ = pg.Exec(context.Background(), "drop table if exists "+full)
			_ = pg.Close(context.Background())
		}
	})
	return full
}

func (b *bundle) exec(sql string) {
	b.t.Helper()
	if _, err := b.pg.Exec(b.t.Context(), sql); err != nil {
		b.t.Fatalf("%s: %v", sql, err)
	}
}

func (b *bundle) count(sql string) int {
	b.t.Helper()
	var n int
	if err := b.pg.QueryRow(b.t.Context(), sql).Scan(&n); err != nil {
		b.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// running counts Millrace's warehouse sessions executing a statement that
// contains marker, as PostgreSQL itself reports them.
func (b *bundle) running(marker string) int {
	b.t.Helper()
	var n int
	err := b.pg.QueryRow(b.t.Context(), `select count(*) from pg_stat_activity
		where application_name = 'millrace' and state = 'active' and query like '%' || $1 || '%' and pid <> pg_backend_pid()`,
		marker).Scan(&n)
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

func (b *bundle) submit(sql, lane string, invalidate bool) api.Submitted {
	b.t.Helper()
	s, err := b.api.QuerySubmit(b.t.Context(), b.project, sql, lane, invalidate)
	if err != nil {
		b.t.Fatalf("submit %q: %v", sql, err)
	}
	return s
}

// record is the query history row, read through the workers' endpoint
// (it has started_at and publishes, which the public poll does not).
func (b *bundle) record(uuid string) api.QueryRecord {
	b.t.Helper()
	resp, err := http.Get(b.h.Srv.URL() + "/api/v2/internal/queries/" + uuid)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var q api.QueryRecord
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil || resp.StatusCode != http.StatusOK {
		b.t.Fatalf("read query %s: HTTP %d, %v", uuid, resp.StatusCode, err)
	}
	return q
}

// waitRecord polls the history row until ok accepts it.
func (b *bundle) waitRecord(uuid string, d time.Duration, what string, ok func(api.QueryRecord) bool) api.QueryRecord {
	b.t.Helper()
	var q api.QueryRecord
	wait.For(b.t, d, func() error {
		q = b.record(uuid)
		if ok(q) {
			return nil
		}
		return fmt.Errorf("query %s is %s (%s), waiting until %s", uuid, q.Status, q.Error, what)
	})
	return q
}

// waitDone polls (through the public API) until the query leaves
// pending/queued/executing and returns the first page at pageSize.
func (b *bundle) waitDone(uuid string, pageSize int) api.QueryPage {
	b.t.Helper()
	var p api.QueryPage
	wait.For(b.t, waitLong, func() error {
		var err error
		p, err = b.api.QueryGet(b.t.Context(), b.project, uuid, 1, pageSize)
		if err != nil {
			b.t.Fatalf("poll %s: %v", uuid, err)
		}
		if p.Status.Terminal() {
			return nil
		}
		return fmt.Errorf("query %s is %s", uuid, p.Status)
	})
	return p
}

// resultsStatus is the HTTP status of the NDJSON results stream.
func (b *bundle) resultsStatus(uuid string) (int, string) {
	b.t.Helper()
	resp, err := http.Get(b.h.Srv.URL() + "/api/v2/projects/" + b.project + "/query/" + uuid + "/results")
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// health returns the server's health document.
func (b *bundle) health() api.Health {
	b.t.Helper()
	h, err := b.api.Health(b.t.Context())
	if err != nil {
		b.t.Fatal(err)
	}
	return h
}

// stalled is health's advice when queries wait with no worker, or "".
func stalled(h api.Health) string {
	if h.Detail == nil {
		return ""
	}
	return h.Detail.QueriesStalled
}

// consumerIdle reports whether both lane consumers delivered and acked
// every job they have been given (at least min in all).
func (b *bundle) consumerIdle(min uint64) error {
	var delivered uint64
	for _, name := range []string{b.h.Cfg.Query.Consumer, b.h.Cfg.Query.Consumer + bus.QueryInteractiveSuffix} {
		c, err := b.h.JS.Consumer(b.t.Context(), b.h.Cfg.Query.Stream, name)
		if err != nil {
			return err
		}
		ci, err := c.Info(b.t.Context())
		if err != nil {
			return err
		}
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			return fmt.Errorf("consumer %s: %d pending, %d unacked", name, ci.NumPending, ci.NumAckPending)
		}
		delivered += ci.AckFloor.Consumer
	}
	if delivered < min {
		return fmt.Errorf("%d jobs acked, want %d", delivered, min)
	}
	return nil
}

func num(v any) int64 {
	switch v := v.(type) {
	case float64:
		return int64(v)
	case json.Number:
		n, _ := v.Int64()
		return n
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return -1
}

func intp(p *int) string {
	if p == nil {
		return "nil"
	}
	return strconv.Itoa(*p)
}

// Submit, poll and page through 100,000 rows: every row exactly once, in
// order, with the paging metadata of each page.
func TestQueryPaging100k(t *testing.T) {
	t.Parallel()
	paths(t, func(t *testing.T, natsEnabled bool) {
		b := setup(t, opts{nats: natsEnabled})
		if natsEnabled {
			b.startWorker(4)
		}
		const total, size = 100_000, 5000
		sub := b.submit(fmt.Sprintf("select n, md5(n::text) as h from generate_series(1, %d) as n order by n", total), "", false)
		if sub.CacheMetadata.CacheHit || sub.QueryUUID == "" {
			t.Fatalf("submit = %+v, want a fresh query", sub)
		}
		first := b.waitDone(sub.QueryUUID, size)
		if first.Status != api.QueryReady {
			t.Fatalf("status %s (%s), want ready", first.Status, first.Error)
		}
		if len(first.Columns) != 2 || first.Columns[0].Name != "n" || first.Columns[1].Name != "h" {
			t.Fatalf("columns = %+v, want n and h", first.Columns)
		}
		// The default page size is 500.
		def, err := b.api.QueryGet(t.Context(), b.project, sub.QueryUUID, 0, 0)
		if err != nil || len(def.Rows) != query.DefaultPageSize || def.TotalPageCount != total/query.DefaultPageSize {
			t.Fatalf("default page: %d rows of %d pages, %v", len(def.Rows), def.TotalPageCount, err)
		}
		next := 1
		for page := 1; page <= total/size; page++ {
			p, err := b.api.QueryGet(t.Context(), b.project, sub.QueryUUID, page, size)
			if err != nil {
				t.Fatalf("page %d: %v", page, err)
			}
			if p.TotalResults != total || p.TotalPageCount != total/size || len(p.Rows) != size {
				t.Fatalf("page %d: totalResults %d, totalPageCount %d, %d rows", page, p.TotalResults, p.TotalPageCount, len(p.Rows))
			}
			wantNext, wantPrev := strconv.Itoa(page+1), strconv.Itoa(page-1)
			if page == total/size {
				wantNext = "nil"
			}
			if page == 1 {
				wantPrev = "nil"
			}
			if intp(p.NextPage) != wantNext || intp(p.PreviousPage) != wantPrev {
				t.Fatalf("page %d: nextPage %s previousPage %s, want %s and %s", page, intp(p.NextPage), intp(p.PreviousPage), wantNext, wantPrev)
			}
			for _, r := range p.Rows {
				sum := md5.Sum([]byte(strconv.Itoa(next)))
				if num(r["n"]) != int64(next) || r["h"] != hex.EncodeToString(sum[:]) {
					t.Fatalf("page %d: row %v, want n=%d", page, r, next)
				}
				next++
			}
		}
		if next != total+1 {
			t.Fatalf("saw %d rows, want %d", next-1, total)
		}
		if _, err := b.api.QueryGet(t.Context(), b.project, sub.QueryUUID, total/size+1, size); client.StatusOf(err) != http.StatusBadRequest ||
			!strings.Contains(err.Error(), "1 to 20") {
			t.Fatalf("page past the end: %v, want 400 naming pages 1 to 20", err)
		}
	})
}

// A second identical submit is answered from the cache, ready at once;
// invalidateCache runs the query again and sees the warehouse's new data.
func TestQueryCache(t *testing.T) {
	t.Parallel()
	paths(t, func(t *testing.T, natsEnabled bool) {
		b := setup(t, opts{nats: natsEnabled})
		if natsEnabled {
			b.startWorker(4)
		}
		tbl := b.table("cache", "n int")
		b.exec("insert into " + tbl + " values (1)")
		sql := "select count(*) as c from " + tbl
		first := b.submit(sql, "", false)
		if first.CacheMetadata.CacheHit {
			t.Fatal("the first submit was a cache hit")
		}
		if p := b.waitDone(first.QueryUUID, 10); p.Status != api.QueryReady || num(p.Rows[0]["c"]) != 1 {
			t.Fatalf("first = %+v", p)
		}
		b.exec("insert into " + tbl + " values (2)")

		hit := b.submit(sql, "", false)
		if !hit.CacheMetadata.CacheHit || hit.QueryUUID == first.QueryUUID {
			t.Fatalf("second submit = %+v, want a cache hit with its own id", hit)
		}
		// Ready at once, without polling, with the cached (old) answer.
		p, err := b.api.QueryGet(t.Context(), b.project, hit.QueryUUID, 1, 10)
		if err != nil || p.Status != api.QueryReady || num(p.Rows[0]["c"]) != 1 {
			t.Fatalf("cache hit poll = %+v, %v; want ready with c=1", p, err)
		}

		fresh := b.submit(sql, "", true)
		if fresh.CacheMetadata.CacheHit {
			t.Fatal("invalidateCache answered from the cache")
		}
		if p := b.waitDone(fresh.QueryUUID, 10); p.Status != api.QueryReady || num(p.Rows[0]["c"]) != 2 {
			t.Fatalf("invalidated = %+v, want c=2 from the warehouse", p)
		}
		// The fresh run now is what the cache answers with.
		again := b.submit(sql, "", false)
		if p, _ := b.api.QueryGet(t.Context(), b.project, again.QueryUUID, 1, 10); !again.CacheMetadata.CacheHit || num(p.Rows[0]["c"]) != 2 {
			t.Fatalf("after invalidation: %+v, %+v; want a hit with c=2", again, p)
		}
	})
}

// Cancel while executing stops the query in PostgreSQL itself.
func TestQueryCancelExecuting(t *testing.T) {
	t.Parallel()
	paths(t, func(t *testing.T, natsEnabled bool) {
		b := setup(t, opts{nats: natsEnabled})
		if natsEnabled {
			b.startWorker(4)
		}
		marker := "cancel_exec_" + b.id
		sub := b.submit("select pg_sleep(30) as slept /* "+marker+" */", "", false)
		wait.For(t, waitLong, func() error {
			if n := b.running(marker); n != 1 {
				return fmt.Errorf("%d sessions run the query in PostgreSQL", n)
			}
			return nil
		})
		want := api.QueryPending
		if natsEnabled {
			want = api.QueryExecuting
		}
		if q := b.record(sub.QueryUUID); q.Status != want {
			t.Fatalf("status while PostgreSQL runs it: %s, want %s", q.Status, want)
		}
		if err := b.api.QueryCancel(t.Context(), b.project, sub.QueryUUID); err != nil {
			t.Fatal(err)
		}
		wait.For(t, waitStop, func() error {
			if n := b.running(marker); n != 0 {
				return fmt.Errorf("PostgreSQL still runs the cancelled query (%d sessions)", n)
			}
			return nil
		})
		p, err := b.api.QueryGet(t.Context(), b.project, sub.QueryUUID, 0, 0)
		if err != nil || p.Status != api.QueryCancelled {
			t.Fatalf("after cancel: %+v, %v", p, err)
		}
		if code, body := b.resultsStatus(sub.QueryUUID); code != http.StatusConflict || !strings.Contains(body, "cancelled") {
			t.Fatalf("results of a cancelled query: %d %s, want 409", code, body)
		}
		if err := b.api.QueryCancel(t.Context(), b.project, sub.QueryUUID); client.StatusOf(err) != http.StatusConflict {
			t.Fatalf("second cancel: %v, want 409", err)
		}
		if natsEnabled {
			// The worker acks the job once it has stopped; the status
			// stays cancelled (a late result cannot overwrite it).
			wait.For(t, waitStop, func() error { return b.consumerIdle(1) })
			if q := b.record(sub.QueryUUID); q.Status != api.QueryCancelled {
				t.Fatalf("after the worker let go: %s", q.Status)
			}
		}
	})
}

// Cancel while queued (no worker): when a worker starts, it never runs it.
func TestQueryCancelQueued(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{nats: true})
	tbl := b.table("cancelq", "n int")
	sub := b.submit("insert into "+tbl+" values (1) returning n", "", false)
	if q := b.record(sub.QueryUUID); q.Status != api.QueryQueued {
		t.Fatalf("status %s, want queued", q.Status)
	}
	if err := b.api.QueryCancel(t.Context(), b.project, sub.QueryUUID); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.resultsStatus(sub.QueryUUID); code != http.StatusConflict {
		t.Fatalf("results of a cancelled query: %d, want 409", code)
	}
	b.startWorker(4)
	after := b.submit("select 1 as one", "", false)
	if p := b.waitDone(after.QueryUUID, 10); p.Status != api.QueryReady {
		t.Fatalf("a query after the cancelled one: %+v", p)
	}
	// Both jobs delivered and acked: the worker saw the cancelled one.
	wait.For(t, waitLong, func() error { return b.consumerIdle(2) })
	q := b.record(sub.QueryUUID)
	if q.Status != api.QueryCancelled || q.StartedAt != nil || q.WorkerID != "" {
		t.Fatalf("cancelled query = status %s started %v worker %q; want it never claimed", q.Status, q.StartedAt, q.WorkerID)
	}
	if n := b.count("select count(*) from " + tbl); n != 0 {
		t.Fatalf("the cancelled insert ran in PostgreSQL (%d rows)", n)
	}
}

// A query queued longer than NATS_QUEUE_TIMEOUT_MS expires and is never
// run, not even by a worker that starts later.
func TestQueryQueueTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{nats: true, queueTimeout: time.Second})
	tbl := b.table("qtimeout", "n int")
	sub := b.submit("insert into "+tbl+" values (1) returning n", "background", false)
	b.waitRecord(sub.QueryUUID, waitLong, "expired", func(q api.QueryRecord) bool { return q.Status == api.QueryExpired })
	if p, err := b.api.QueryGet(t.Context(), b.project, sub.QueryUUID, 0, 0); err != nil || p.Status != api.QueryExpired {
		t.Fatalf("poll = %+v, %v; want expired", p, err)
	}
	b.startWorker(4)
	wait.For(t, waitLong, func() error { return b.consumerIdle(1) })
	if q := b.record(sub.QueryUUID); q.Status != api.QueryExpired || q.StartedAt != nil {
		t.Fatalf("after a worker started: status %s started %v", q.Status, q.StartedAt)
	}
	if n := b.count("select count(*) from " + tbl); n != 0 {
		t.Fatalf("the expired insert ran in PostgreSQL (%d rows)", n)
	}
}

// After CACHE_STALE_TIME_SECONDS results are gone: 410 saying to run the
// query again, and the cache no longer answers with them.
func TestQueryResultExpiry(t *testing.T) {
	t.Parallel()
	paths(t, func(t *testing.T, natsEnabled bool) {
		b := setup(t, opts{nats: natsEnabled, cacheStale: time.Second})
		if natsEnabled {
			b.startWorker(4)
		}
		sql := "select 'expiry' as what /* " + b.id + " */"
		sub := b.submit(sql, "", false)
		q := b.waitRecord(sub.QueryUUID, waitLong, "ready", func(q api.QueryRecord) bool { return q.Status.Terminal() })
		if q.Status != api.QueryReady || q.ExpiresAt == nil {
			t.Fatalf("query = %s (%s), expires %v", q.Status, q.Error, q.ExpiresAt)
		}
		wait.For(t, waitLong, func() error {
			_, err := b.api.QueryGet(t.Context(), b.project, sub.QueryUUID, 0, 0)
			if client.StatusOf(err) == http.StatusGone {
				return nil
			}
			return fmt.Errorf("poll: %v, waiting for 410", err)
		})
		_, err := b.api.QueryGet(t.Context(), b.project, sub.QueryUUID, 0, 0)
		if !strings.Contains(err.Error(), "run the query again") {
			t.Fatalf("expired poll: %v; want it to say to run the query again", err)
		}
		if code, body := b.resultsStatus(sub.QueryUUID); code != http.StatusGone || !strings.Contains(body, "run the query again") {
			t.Fatalf("expired results stream: %d %s", code, body)
		}
		again := b.submit(sql, "", false)
		if again.CacheMetadata.CacheHit {
			t.Fatal("expired results answered a new submit from the cache")
		}
		// (It may expire again before a poll sees it; the history says.)
		if r := b.waitRecord(again.QueryUUID, waitLong, "done", func(q api.QueryRecord) bool { return q.Status.Terminal() }); r.Status != api.QueryReady {
			t.Fatalf("re-run = %s (%s)", r.Status, r.Error)
		}
	})
}

// An interactive query submitted behind 1,000 queued background queries
// starts within a second.
func TestQueryLanes(t *testing.T) {
	t.Parallel()
	paths(t, func(t *testing.T, natsEnabled bool) {
		b := setup(t, opts{nats: natsEnabled, pgStore: true})
		const background = 1000
		if natsEnabled {
			b.startWorker(4) // 3 background slots, 1 kept for interactive work
		}
		marker := "lane_bg_" + b.id
		var wg sync.WaitGroup
		errs := make(chan error, background)
		next := make(chan int)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if _, err := b.api.QuerySubmit(t.Context(), b.project,
						fmt.Sprintf("select pg_sleep(5), %d as i /* %s */", i, marker), "background", false); err != nil {
						errs <- err
					}
				}
			}()
		}
		for i := range background {
			next <- i
		}
		close(next)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// The background lane is busy in the warehouse.
		wait.For(t, waitLong, func() error {
			if n := b.running(marker); n < 3 {
				return fmt.Errorf("%d background queries running", n)
			}
			return nil
		})
		sub := b.submit("select 'interactive' as lane /* "+b.id+" */", "interactive", false)
		q := b.waitRecord(sub.QueryUUID, waitLong, "started", func(q api.QueryRecord) bool { return q.StartedAt != nil })
		// It went ahead of the backlog rather than after it.
		if left := b.unfinished(marker); left < background/2 {
			t.Fatalf("only %d background queries left unfinished: the test did not build a backlog", left)
		}
		if waited := q.StartedAt.Sub(q.CreatedAt); waited > time.Second {
			t.Fatalf("the interactive query started %s after it was submitted, want under 1s", waited)
		}
		if p := b.waitDone(sub.QueryUUID, 10); p.Status != api.QueryReady {
			t.Fatalf("interactive = %+v", p)
		}
		b.cancelAll(marker) // rather than sleep through the backlog
	})
}

// history lists the project's queries whose SQL contains marker.
func (b *bundle) history(marker string) []api.QueryRecord {
	b.t.Helper()
	var out []api.QueryRecord
	for page := 1; ; page++ {
		resp, err := http.Get(fmt.Sprintf("%s/api/v2/projects/%s/query/history?page=%d&pageSize=%d", b.h.Srv.URL(), b.project, page, query.MaxPageSize))
		if err != nil {
			b.t.Fatal(err)
		}
		var h struct {
			Queries []struct {
				QueryUUID string          `json:"queryUuid"`
				Status    api.QueryStatus `json:"status"`
				SQL       string          `json:"sql"`
			} `json:"queries"`
		}
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil {
			b.t.Fatal(err)
		}
		if len(h.Queries) == 0 {
			return out
		}
		for _, q := range h.Queries {
			if strings.Contains(q.SQL, marker) {
				out = append(out, api.QueryRecord{QueryUUID: q.QueryUUID, Status: q.Status, SQL: q.SQL})
			}
		}
	}
}

// unfinished counts the marked queries that have not ended.
func (b *bundle) unfinished(marker string) int {
	b.t.Helper()
	n := 0
	for _, q := range b.history(marker) {
		if !q.Status.Terminal() {
			n++
		}
	}
	return n
}

// cancelAll cancels the marked queries that have not ended.
func (b *bundle) cancelAll(marker string) {
	b.t.Helper()
	for _, q := range b.history(marker) {
		if !q.Status.Terminal() {
			_ = b.api.QueryCancel(b.t.Context(), b.project, q.QueryUUID)
		}
	}
}

// NATS restarts (memory storage: every queued notification is lost); the
// query history is the truth and the reaper re-notifies, so every queued
// query still runs.
func TestQueryNATSRestart(t *testing.T) {
	t.Parallel()
	paths(t, func(t *testing.T, natsEnabled bool) {
		b := setup(t, opts{nats: natsEnabled, redeliverAfter: time.Second})
		const n = 20
		uuids := make([]string, n)
		for i := range uuids {
			uuids[i] = b.submit(fmt.Sprintf("select %d as i, pg_sleep(0.2) /* restart %s */", i, b.id), []string{"interactive", "background"}[i%2], false).QueryUUID
		}
		var created time.Time
		if natsEnabled {
			wait.For(t, waitLong, func() error {
				st, err := b.h.JS.Stream(t.Context(), b.h.Cfg.Query.Stream)
				if err != nil {
					return err
				}
				info := st.CachedInfo()
				if info.State.Msgs < n {
					return fmt.Errorf("%d of %d jobs published", info.State.Msgs, n)
				}
				// Stored is not yet acked: an outbox row whose ack the
				// restart cuts off is published again by the relay, not
				// re-notified by the reaper, and the check below would
				// count one notification for a query that had two.
				h, err := b.h.API.Health(t.Context())
				if err != nil {
					return err
				}
				if h.Stats == nil || h.Stats.OutboxDepth > 0 {
					return fmt.Errorf("the outbox still holds unacked jobs: %+v", h.Stats)
				}
				created = info.Created
				return nil
			})
		}
		if err := b.h.NATS.Restart(); err != nil {
			t.Fatal(err)
		}
		if natsEnabled {
			// The server recreates the stream on reconnect: a new, empty
			// one, so every notification sent before is gone.
			wait.For(t, waitLong, func() error {
				st, err := b.h.JS.Stream(t.Context(), b.h.Cfg.Query.Stream)
				if err != nil {
					return err
				}
				if st.CachedInfo().Created.Equal(created) {
					return fmt.Errorf("the stream from before the restart is still there")
				}
				return nil
			})
			b.startWorker(8)
		}
		for _, u := range uuids {
			if p := b.waitDone(u, 10); p.Status != api.QueryReady {
				t.Fatalf("query %s after the NATS restart: %s (%s)", u, p.Status, p.Error)
			}
			if q := b.record(u); natsEnabled && q.Publishes < 2 {
				t.Fatalf("query %s ran with %d notification(s); want a re-notification after the restart", u, q.Publishes)
			}
		}
	})
}

// Bad input gets the status and message a client can act on.
func TestQueryBadInput(t *testing.T) {
	t.Parallel()
	paths(t, func(t *testing.T, natsEnabled bool) {
		b := setup(t, opts{nats: natsEnabled})
		if natsEnabled {
			b.startWorker(4)
		}
		ctx := t.Context()
		missing := "no_such_table_" + b.id
		bad := b.submit("select * from "+missing, "", false)
		p := b.waitDone(bad.QueryUUID, 10)
		if p.Status != api.QueryError || !strings.Contains(p.Error, `relation "`+missing+`" does not exist`) {
			t.Fatalf("rejected SQL = %s %q, want error with PostgreSQL's message", p.Status, p.Error)
		}
		if code, _ := b.resultsStatus(bad.QueryUUID); code != http.StatusConflict {
			t.Fatalf("results of a failed query: %d, want 409", code)
		}

		if _, err := b.api.QuerySubmit(ctx, "nope_"+b.id, "select 1", "", false); client.StatusOf(err) != http.StatusNotFound {
			t.Fatalf("submit to an unknown project: %v, want 404", err)
		}
		if _, err := b.api.QueryGet(ctx, "nope_"+b.id, bad.QueryUUID, 0, 0); client.StatusOf(err) != http.StatusNotFound {
			t.Fatalf("poll in an unknown project: %v, want 404", err)
		}
		if _, err := b.api.QueryGet(ctx, b.project, "00000000-0000-4000-8000-000000000000", 0, 0); client.StatusOf(err) != http.StatusNotFound {
			t.Fatalf("poll of an unknown query: %v, want 404", err)
		}
		if _, err := b.api.QuerySubmit(ctx, b.project, "select 1", "urgent", false); client.StatusOf(err) != http.StatusBadRequest {
			t.Fatalf("unknown context: %v, want 400", err)
		}

		ok := b.submit("select n from generate_series(1, 25) as n order by n", "", false)
		if p := b.waitDone(ok.QueryUUID, 10); p.Status != api.QueryReady || p.TotalPageCount != 3 {
			t.Fatalf("good query = %+v", p)
		}
		for _, size := range []string{"0", "-1", "5001", "x"} {
			resp, err := http.Get(b.h.Srv.URL() + "/api/v2/projects/" + b.project + "/query/" + ok.QueryUUID + "?pageSize=" + size)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := http.StatusBadRequest
			if size == "0" {
				want = http.StatusOK // 0 is "the default"
			}
			if resp.StatusCode != want {
				t.Fatalf("pageSize=%s: %d %s, want %d", size, resp.StatusCode, body, want)
			}
		}
		_, err := b.api.QueryGet(ctx, b.project, ok.QueryUUID, 4, 10)
		if client.StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "1 to 3") {
			t.Fatalf("page past the end: %v, want 400 with the valid range 1 to 3", err)
		}
	})
}

// A worker with concurrency 100 runs 100 queries at once, as PostgreSQL
// sees it.
func TestQueryWorkerConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{nats: true})
	var maxConns int
	if err := b.pg.QueryRow(t.Context(), "select current_setting('max_connections')::int").Scan(&maxConns); err != nil {
		t.Fatal(err)
	}
	if maxConns < minMaxConnections {
		t.Fatalf("the warehouse allows %d connections; this test needs %d or more: run "+
			"`psql -U postgres -c 'ALTER SYSTEM SET max_connections = 500'` and restart PostgreSQL", maxConns, minMaxConnections)
	}
	const n = query.DefaultConcurrency
	b.startWorker(n)
	marker := "conc_" + b.id
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Interactive: the background lane keeps slots free for it.
			if _, err := b.api.QuerySubmit(t.Context(), b.project, fmt.Sprintf("select pg_sleep(30), %d /* %s */", i, marker), "interactive", false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	peak := 0
	wait.For(t, waitLong, func() error {
		peak = max(peak, b.running(marker))
		if peak < n {
			return fmt.Errorf("at most %d of %d queries seen running at once in pg_stat_activity", peak, n)
		}
		return nil
	})
	b.cancelAll(marker)
	wait.For(t, waitStop, func() error {
		if r := b.running(marker); r > 0 {
			return fmt.Errorf("%d cancelled queries still running", r)
		}
		return nil
	})
}

// Queries queued with no worker are never silent: health says so until a
// worker consumes them.
func TestQueryHealthStalled(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{nats: true})
	if stalled(b.health()) != "" {
		t.Fatal("stalled with nothing queued")
	}
	sub := b.submit("select 1 as one /* "+b.id+" */", "", false)
	h := b.health()
	if h.Status != "degraded" || !strings.Contains(stalled(h), "millrace worker --stream warehouse") {
		t.Fatalf("health with a queued query and no worker = %+v", h)
	}
	b.startWorker(2)
	if p := b.waitDone(sub.QueryUUID, 10); p.Status != api.QueryReady {
		t.Fatalf("query = %+v", p)
	}
	wait.For(t, waitLong, func() error {
		h := b.health()
		if stalled(h) != "" || h.Status != "ok" {
			return fmt.Errorf("health = %+v", h)
		}
		return nil
	})
}
