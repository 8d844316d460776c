package query

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/results"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/warehouse"
)

// maxResultLine bounds one NDJSON row in a worker's upload.
const maxResultLine = 64 << 20

// recordTimeout bounds writing a query's outcome once its own context is
// over (failed, or ended by Stop).
const recordTimeout = 10 * time.Second

// startInProcess runs q in this process (NATS_ENABLED=false). The status
// stays pending until it ends: `queued` and `executing` belong to the NATS
// path, so clients see the same states as Lightdash users do. The query's
// goroutine belongs to s.inProcess, so Stop ends and waits for it.
func (s *Service) startInProcess(q store.Query) {
	ctx, cancel := context.WithCancel(s.inProcess.Context())
	s.mu.Lock()
	s.running[q.QueryUUID] = cancel
	s.mu.Unlock()
	done := func() {
		cancel()
		s.mu.Lock()
		delete(s.running, q.QueryUUID)
		s.mu.Unlock()
	}
	if !s.inProcess.Go("query "+q.QueryUUID, func(context.Context) error {
		defer done()
		s.runInProcess(ctx, q)
		return nil
	}) {
		done()
		s.interrupted(q.QueryUUID) // submitted as the server stopped
	}
}

// runInProcess waits for a slot and runs q until it ends or ctx does.
func (s *Service) runInProcess(ctx context.Context, q store.Query) {
	// Bounded concurrency, like a worker; waiting too long expires it.
	// Background queries first take a background slot, so they never
	// hold the slots kept for interactive work (the lanes).
	timer := time.NewTimer(s.cfg.QueueTimeout)
	defer timer.Stop()
	pools := []chan struct{}{s.slots}
	if q.Lane == LaneBackground {
		pools = []chan struct{}{s.bgSlots, s.slots}
	}
	for _, pool := range pools {
		select {
		case pool <- struct{}{}:
			defer func() { <-pool }()
		case <-ctx.Done():
			s.interrupted(q.QueryUUID) // a no-op if cancelled: that recorded the outcome
			return
		case <-timer.C:
			s.finish(context.WithoutCancel(ctx), q.QueryUUID, []api.QueryStatus{api.QueryPending}, api.QueryExpired, store.QueryUpdate{})
			return
		}
	}
	p, err := s.projectByID(ctx, q.ProjectID)
	if err != nil {
		s.fail(q.QueryUUID, []api.QueryStatus{api.QueryPending}, err.Error())
		return
	}
	conn, err := s.Connection(p)
	if err != nil {
		s.fail(q.QueryUUID, []api.QueryStatus{api.QueryPending}, err.Error())
		return
	}
	start := s.now()
	upd, err := s.execute(ctx, q, conn)
	if ctx.Err() != nil {
		s.interrupted(q.QueryUUID)
		return
	}
	if err != nil {
		s.fail(q.QueryUUID, []api.QueryStatus{api.QueryPending}, err.Error())
		return
	}
	upd.StartedAt = &start
	s.finish(context.WithoutCancel(ctx), q.QueryUUID, []api.QueryStatus{api.QueryPending}, api.QueryReady, upd)
}

// interrupted records that an in-process query was ended by Stop, so it is
// not left pending. After a client's cancel the compare-and-set loses (the
// cancel already recorded the outcome) and nothing changes.
func (s *Service) interrupted(uuid string) {
	if s.inProcess.Context().Err() == nil {
		return // cancelled by a client, not stopped
	}
	msg := "interrupted: the server shut down while this query ran; run it again"
	s.fail(uuid, []api.QueryStatus{api.QueryPending}, msg)
}

// Stop ends the in-process queries (recording each as interrupted) and
// waits for their goroutines; call it before closing the store.
func (s *Service) Stop() { _ = s.inProcess.Stop() }

func (s *Service) projectByID(ctx context.Context, id int64) (store.Project, error) {
	return store.ReadValue(ctx, s.st, func(q store.Querier) (store.Project, error) {
		return q.ProjectGetByID(ctx, id)
	})
}

// run executes q against the warehouse into the results store and returns
// the fields of its ready transition.
func (s *Service) run(ctx context.Context, q store.Query, conn warehouse.Conn) (store.QueryUpdate, error) {
	drv, err := warehouse.Open(ctx, conn)
	if err != nil {
		return store.QueryUpdate{}, err
	}
	defer drv.Close()
	w, err := s.results.Create(q.QueryUUID)
	if err != nil {
		return store.QueryUpdate{}, err
	}
	err = drv.Query(ctx, q.SQL, w.SetColumns, w.Write)
	if err != nil {
		_ = w.Abort()
		return store.QueryUpdate{}, err
	}
	return s.closeWriter(w, q.QueryUUID)
}

func (s *Service) closeWriter(w *results.Writer, key string) (store.QueryUpdate, error) {
	meta, err := w.Close()
	if err != nil {
		return store.QueryUpdate{}, err
	}
	cols, _ := json.Marshal(meta.Columns)
	expires := s.now().Add(s.cfg.CacheStale)
	now := s.now()
	return store.QueryUpdate{Columns: cols, TotalRows: &meta.TotalRows, ResultKey: &key, EndedAt: &now, ExpiresAt: &expires}, nil
}

// finish applies a final compare-and-set; losing it (cancelled meanwhile)
// is not an error.
func (s *Service) finish(ctx context.Context, uuid string, from []api.QueryStatus, to api.QueryStatus, upd store.QueryUpdate) bool {
	now := s.now()
	if upd.EndedAt == nil {
		upd.EndedAt = &now
	}
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.QueryTransition(ctx, uuid, from, to, upd, now)
		return err
	})
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			s.log.Error("recording a query outcome failed", "query", uuid, "to", to, "err", err)
		}
		return false
	}
	mFinished.WithLabelValues(string(to)).Inc()
	return true
}

func (s *Service) fail(uuid string, from []api.QueryStatus, msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	s.finish(ctx, uuid, from, api.QueryError, store.QueryUpdate{Error: &msg})
}

// Claimed is what a worker needs to run a query.
type Claimed struct {
	QueryUUID string         `json:"queryUuid"`
	SQL       string         `json:"sql"`
	Lane      string         `json:"lane"`
	Warehouse warehouse.Conn `json:"warehouse"`
	// PreAggregate is set for a query served from a pre-aggregate build
	// (Target preagg): what the pre-aggregate worker runs in DuckDB.
	PreAggregate *api.ServePlan `json:"preAggregate,omitempty"`
}

// Claim moves a queued query to executing for worker, unless it waited
// longer than the queue timeout (it then becomes expired and is not run).
// 409 when it is no longer queued (cancelled, taken, done).
//
// token is the claiming worker's token id (auth.ClaimTokenID; 0 without
// one): while it is not 0 only that token may heartbeat, upload, fail or
// fall back.
func (s *Service) Claim(ctx context.Context, uuid, worker string, token int64) (Claimed, error) {
	q, err := store.ReadValue(ctx, s.st, func(qq store.Querier) (store.Query, error) {
		return qq.QueryGet(ctx, uuid)
	})
	if errors.Is(err, store.ErrNotFound) {
		return Claimed{}, errorf(ErrQueryNotFound, "query %s does not exist", uuid)
	}
	if err != nil {
		return Claimed{}, err
	}
	now := s.now()
	if q.Status == api.QueryQueued && q.StartedAt == nil && now.Sub(q.CreatedAt) > s.cfg.QueueTimeout {
		s.finish(ctx, uuid, []api.QueryStatus{api.QueryQueued}, api.QueryExpired, store.QueryUpdate{})
		return Claimed{}, errorf(ErrNotClaimable, "query %s waited %s in the queue, over NATS_QUEUE_TIMEOUT_MS: expired, not run", uuid, now.Sub(q.CreatedAt).Round(time.Millisecond))
	}
	p, err := s.projectByID(ctx, q.ProjectID)
	if err != nil {
		return Claimed{}, err
	}
	conn, err := s.Connection(p)
	if err != nil {
		return Claimed{}, err
	}
	var plan *api.ServePlan
	if q.Target == TargetPreAgg && q.Status == api.QueryQueued {
		sp, err := s.servePlan(ctx, q)
		if objectLost(err) {
			// The build is gone before anyone served from it: the query
			// goes to the warehouse without reaching the worker.
			return Claimed{}, s.rerouteQueued(ctx, q, err.Error())
		}
		if err != nil {
			return Claimed{}, err
		}
		plan = &sp
	}
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		q, err = tx.QueryTransition(ctx, uuid, []api.QueryStatus{api.QueryQueued}, api.QueryExecuting,
			store.QueryUpdate{WorkerID: &worker, ClaimTokenID: &token, StartedAt: &now, PublishedAt: &now}, now)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return Claimed{}, errorf(ErrNotClaimable, "query %s is %s, not queued", uuid, q.Status)
	}
	if err != nil {
		return Claimed{}, err
	}
	return Claimed{QueryUUID: uuid, SQL: q.SQL, Lane: q.Lane, Warehouse: conn, PreAggregate: plan}, nil
}

// Ingest stores a worker's results (NDJSON: a {"columns": [...]} line, then
// one JSON array per row) and marks the query ready. If the query was
// cancelled meanwhile the results are dropped and 409 returned.
func (s *Service) Ingest(ctx context.Context, uuid, worker string, token int64, body io.Reader) (store.Query, error) {
	// Only the worker that holds the query may upload: a stale worker whose
	// job was redelivered elsewhere must not race the current one.
	cur, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.Query, error) {
		return q.QueryGet(ctx, uuid)
	})
	if errors.Is(err, store.ErrNotFound) {
		return store.Query{}, errorf(ErrQueryNotFound, "query %s does not exist", uuid)
	}
	if err != nil {
		return store.Query{}, err
	}
	if otherToken(cur, worker, token) {
		return cur, notYours(uuid, worker)
	}
	if cur.Status != api.QueryExecuting || cur.WorkerID != worker {
		return cur, errorf(ErrNotHolder, "query %s is %s and held by %q, not %q; upload refused", uuid, cur.Status, cur.WorkerID, worker)
	}
	w, err := s.results.Create(uuid)
	if err != nil {
		return store.Query{}, err
	}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), maxResultLine)
	first := true
	for sc.Scan() {
		line := sc.Bytes()
		if first {
			var h warehouse.ResultHeader
			if err := json.Unmarshal(line, &h); err != nil {
				_ = w.Abort()
				return store.Query{}, errorf(ErrInvalidResults, "first line must be {\"columns\": [...]}: %v", err)
			}
			if err := w.SetColumns(h.Columns); err != nil {
				_ = w.Abort()
				return store.Query{}, err
			}
			first = false
			continue
		}
		var row []any
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&row); err != nil {
			_ = w.Abort()
			return store.Query{}, errorf(ErrInvalidResults, "row is not a JSON array: %v", err)
		}
		if err := w.Write(row); err != nil {
			_ = w.Abort()
			return store.Query{}, err
		}
	}
	if err := sc.Err(); err != nil || first {
		_ = w.Abort()
		if err == nil {
			err = fmt.Errorf("empty upload")
		}
		return store.Query{}, errorf(ErrInvalid, "result upload incomplete: %v", err)
	}
	upd, err := s.closeWriter(w, uuid)
	if err != nil {
		return store.Query{}, err
	}
	now := s.now()
	var q store.Query
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.QueryGet(ctx, uuid)
		if err != nil {
			return err
		}
		if cur.WorkerID != worker || otherToken(cur, worker, token) { // re-queued and taken over while we streamed
			q = cur
			return store.ErrConflict
		}
		q, err = tx.QueryTransition(ctx, uuid, []api.QueryStatus{api.QueryExecuting}, api.QueryReady, upd, now)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		_ = s.results.Delete(uuid)
		return q, errorf(ErrNotHolder, "query %s is %s; its results were dropped", uuid, q.Status)
	}
	if err == nil {
		mFinished.WithLabelValues(string(api.QueryReady)).Inc()
	}
	return q, err
}

// Heartbeat records that worker still runs uuid (PublishedAt doubles as
// "last seen" while executing). 409 when the query is no longer executing
// for this worker (cancelled, re-queued, done): the worker should stop.
func (s *Service) Heartbeat(ctx context.Context, uuid, worker string, token int64) (store.Query, error) {
	now := s.now()
	var q store.Query
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.QueryGet(ctx, uuid)
		if err != nil {
			return err
		}
		if otherToken(cur, worker, token) {
			q = cur
			return notYours(uuid, worker)
		}
		if cur.Status != api.QueryExecuting || cur.WorkerID != worker {
			q = cur
			return store.ErrConflict
		}
		q, err = tx.QueryTransition(ctx, uuid, []api.QueryStatus{api.QueryExecuting}, api.QueryExecuting, store.QueryUpdate{PublishedAt: &now}, now)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return q, errorf(ErrQueryNotFound, "query %s does not exist", uuid)
	case errors.Is(err, store.ErrConflict):
		return q, errorf(ErrNotHolder, "query %s is %s (worker %q); stop running it", uuid, q.Status, q.WorkerID)
	}
	return q, err
}

// Fail records a worker's failure (the warehouse's message).
func (s *Service) Fail(ctx context.Context, uuid, worker string, token int64, msg string) error {
	now := s.now()
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.QueryGet(ctx, uuid)
		if err != nil {
			return err
		}
		if otherToken(cur, worker, token) {
			return notYours(uuid, worker)
		}
		if cur.WorkerID != worker { // a stale worker: another one holds it now
			return store.ErrConflict
		}
		_, err = tx.QueryTransition(ctx, uuid, []api.QueryStatus{api.QueryExecuting}, api.QueryError, store.QueryUpdate{Error: &msg, EndedAt: &now}, now)
		return err
	})
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		return errorf(ErrNotHolder, "query %s is no longer executing for worker %q", uuid, worker)
	}
	if err != nil {
		return err
	}
	mFinished.WithLabelValues(string(api.QueryError)).Inc()
	return nil
}

// RecoverInProcess ends in-process queries that a previous run of this
// server left pending (NATS_ENABLED=false keeps them only in memory): they
// fail with a message saying to run them again, instead of being polled
// forever. With several servers in in-process mode, each would also end
// the others' running queries: run one server per database in that mode.
func (s *Service) RecoverInProcess(ctx context.Context, startedAt time.Time) (int, error) {
	if s.cfg.NATSEnabled {
		return 0, nil
	}
	stale, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Query, error) {
		return q.QueriesCreatedBefore(ctx, []api.QueryStatus{api.QueryPending}, startedAt, 0)
	})
	if err != nil {
		return 0, err
	}
	msg := "interrupted: the server restarted while this query ran; run it again"
	n := 0
	for _, q := range stale {
		if s.finish(ctx, q.QueryUUID, []api.QueryStatus{api.QueryPending}, api.QueryError, store.QueryUpdate{Error: &msg}) {
			n++
		}
	}
	return n, nil
}
