// Package query is the warehouse-query face of Millrace (the Lightdash
// contract): projects with warehouse connections, asynchronous queries
// recorded in a query history table (the truth), a results cache, paged
// results, cancel, expiry, and two ways to run: on dedicated NATS workers
// (NATS_ENABLED=true; only the query's id travels over NATS) or in the API
// server's own process (NATS_ENABLED=false), with the same states either
// way except that `queued` and `executing` exist only on the NATS path.
package query

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/lifecycle"
	"github.com/millrace/millrace/internal/results"
	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/warehouse"
)

// Defaults from the seeds and the Lightdash contract.
const (
	DefaultConcurrency    = 100
	DefaultQueueTimeout   = 180 * time.Second // NATS_QUEUE_TIMEOUT_MS
	DefaultCacheStale     = 24 * time.Hour    // CACHE_STALE_TIME_SECONDS
	DefaultPageSize       = 500
	MaxPageSize           = 5000
	DefaultRedeliverAfter = 30 * time.Second
	LaneInteractive       = bus.QueryLaneInteractive
	LaneBackground        = bus.QueryLaneBackground
)

// Config configures a Service.
type Config struct {
	NATSEnabled    bool
	Concurrency    int           // in-process executor slots (NATS_WORKER_CONCURRENCY)
	QueueTimeout   time.Duration // queued longer than this -> expired
	CacheStale     time.Duration // results older than this -> expired
	RedeliverAfter time.Duration // re-notify queued queries after this
	// StaleWorkerAfter: an executing query whose worker has not
	// heartbeated for this long is re-queued (its worker died).
	StaleWorkerAfter time.Duration
	Subject          string // subject prefix, default warehouse.query.jobs
	Timezone         string // part of the cache key

	// The metrics layer (metric queries and pre-aggregates).

	// PreAggEnabled is PRE_AGGREGATES_ENABLED: false sends every metric
	// query to the warehouse (miss reason PRE_AGGREGATES_DISABLED).
	PreAggEnabled bool
	// PreAggSubject is where metric queries served from a pre-aggregate
	// are published (NATS_ENABLED=true); default
	// bus.DefaultPreAggQuerySubject (PRE_AGGREGATE_QUERY_SUBJECT).
	PreAggSubject string
	// Engine serves pre-aggregate hits in this process when NATS_ENABLED
	// is false (the server's *engine.Engine). Without one, metric queries
	// in that mode all go to the warehouse (miss PRE_AGGREGATES_DISABLED).
	Engine PreAggEngine
	// OnObjectLost is called when a served build's Parquet is gone (a
	// worker's fallback, or the in-process engine's): the builds
	// service's hook that starts a rebuild. nil: nothing is rebuilt.
	OnObjectLost func(ctx context.Context, projectID int64, model, preAgg string) error
}

// Service is the query lifecycle.
type Service struct {
	cfg     Config
	st      *store.Store
	ids     *ids.Generator
	box     *secret.Box
	results *results.Store
	log     *slog.Logger
	wake    func() // tells the relay the outbox has rows

	// inProcess owns the goroutines of in-process queries (see Stop).
	inProcess *lifecycle.Group
	mu        sync.Mutex
	running   map[string]context.CancelFunc // in-process queries, for cancel
	slots     chan struct{}                 // in-process executor slots
	bgSlots   chan struct{}                 // fewer: background work leaves some slots to interactive
	nowFn     func() time.Time
}

// New builds the service. box may be nil: projects then cannot be created
// (their connections are sealed). wake may be nil.
func New(cfg Config, st *store.Store, gen *ids.Generator, box *secret.Box, res *results.Store, log *slog.Logger, wake func()) *Service {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = DefaultQueueTimeout
	}
	if cfg.CacheStale <= 0 {
		cfg.CacheStale = DefaultCacheStale
	}
	if cfg.RedeliverAfter <= 0 {
		cfg.RedeliverAfter = DefaultRedeliverAfter
	}
	if cfg.StaleWorkerAfter <= 0 {
		cfg.StaleWorkerAfter = DefaultStaleWorkerAfter
	}
	if cfg.Subject == "" {
		cfg.Subject = bus.DefaultQuerySubject
	}
	if cfg.Timezone == "" {
		cfg.Timezone = "UTC"
	}
	if cfg.PreAggSubject == "" {
		cfg.PreAggSubject = bus.DefaultPreAggQuerySubject
	}
	if wake == nil {
		wake = func() {}
	}
	return &Service{cfg: cfg, st: st, ids: gen, box: box, results: res, log: log, wake: wake,
		inProcess: lifecycle.New(context.Background()),
		running:   map[string]context.CancelFunc{}, slots: make(chan struct{}, cfg.Concurrency),
		bgSlots: make(chan struct{}, max(1, cfg.Concurrency-bus.QueryInteractiveReserve(cfg.Concurrency))), nowFn: time.Now}
}

// SetPreAgg injects the pre-aggregate hooks (Config.Engine and
// Config.OnObjectLost) when they are made after the service, as the
// builds service is (it reads models through this one). Call it before
// the server takes requests.
func (s *Service) SetPreAgg(engine PreAggEngine, onObjectLost func(ctx context.Context, projectID int64, model, preAgg string) error) {
	s.cfg.Engine, s.cfg.OnObjectLost = engine, onObjectLost
}

func (s *Service) now() time.Time { return s.nowFn().UTC().Truncate(time.Microsecond) }

// Config returns the effective configuration.
func (s *Service) Config() Config { return s.cfg }

var projectName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// PutProject creates or replaces a project and its sealed connection.
func (s *Service) PutProject(ctx context.Context, name string, conn warehouse.Conn) (store.Project, error) {
	if !projectName.MatchString(name) {
		return store.Project{}, errorf(ErrInvalid, "project name %q must match %s", name, projectName)
	}
	if err := warehouse.Validate(conn); err != nil {
		return store.Project{}, errorf(ErrInvalid, "warehouse: %v", err)
	}
	if s.box == nil {
		return store.Project{}, errorf(ErrSecretKeyMissing, "project connections are encrypted at rest: set MILLRACE_SECRET_KEY (generate one with `openssl rand -hex 32`)")
	}
	plain, _ := json.Marshal(conn)
	sealed, err := s.box.Seal(plain, []byte("project:"+name))
	if err != nil {
		return store.Project{}, err
	}
	var p store.Project
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		p, err = tx.ProjectPut(ctx, store.Project{ProjectID: s.ids.Next(), Name: name, WarehouseType: conn.Type, Warehouse: sealed, CreatedAt: s.now(), UpdatedAt: s.now()})
		return err
	})
	return p, err
}

// Projects lists projects (without connections).
func (s *Service) Projects(ctx context.Context) ([]store.Project, error) {
	return store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Project, error) {
		return q.ProjectList(ctx)
	})
}

// Project looks a project up by name (404 if absent).
func (s *Service) Project(ctx context.Context, name string) (store.Project, error) {
	p, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.Project, error) {
		return q.ProjectGet(ctx, name)
	})
	if errors.Is(err, store.ErrNotFound) {
		return p, errorf(ErrProjectNotFound, "project %q does not exist; create it with POST /api/v2/projects", name)
	}
	return p, err
}

// Connection unseals a project's warehouse connection.
func (s *Service) Connection(p store.Project) (warehouse.Conn, error) {
	var c warehouse.Conn
	if s.box == nil {
		return c, errorf(ErrSecretKeyMissing, "MILLRACE_SECRET_KEY is not set, so project %q's connection cannot be decrypted", p.Name)
	}
	plain, err := s.box.Open(p.Warehouse, []byte("project:"+p.Name))
	if err != nil {
		return c, fmt.Errorf("decrypt project %s connection: %w", p.Name, err)
	}
	err = json.Unmarshal(plain, &c)
	return c, err
}

// CacheKey hashes what makes two queries answer the same: the project (and
// the version of its connection), the SQL, the timezone and, where per-user
// credentials apply, the user.
func CacheKey(projectID, projectVersion int64, sql, timezone, user string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%d\x00%s\x00%s\x00%s", projectID, projectVersion, strings.TrimSpace(sql), timezone, user)
	return hex.EncodeToString(h.Sum(nil))
}

// SubmitRequest is a query submission.
type SubmitRequest struct {
	Project         string
	SQL             string
	Lane            string // interactive (default) | background
	InvalidateCache bool
	User            string
}

// Submit records a query and starts it (or answers it from the cache).
func (s *Service) Submit(ctx context.Context, r SubmitRequest) (store.Query, error) {
	if strings.TrimSpace(r.SQL) == "" {
		return store.Query{}, errorf(ErrInvalid, "sql is required")
	}
	lane, err := checkLane(r.Lane)
	if err != nil {
		return store.Query{}, err
	}
	p, err := s.Project(ctx, r.Project)
	if err != nil {
		return store.Query{}, err
	}
	now := s.now()
	// The project's UpdatedAt is part of the key: pointing a project at
	// another warehouse must not serve the old warehouse's results.
	key := CacheKey(p.ProjectID, p.UpdatedAt.UnixMicro(), r.SQL, s.cfg.Timezone, r.User)
	q := store.Query{QueryUUID: newUUID(), ProjectID: p.ProjectID, SQL: r.SQL, Lane: lane, CacheKey: key,
		Status: api.QueryPending, CreatedAt: now, UpdatedAt: now}
	return s.start(ctx, q, r.InvalidateCache)
}

// checkLane validates a submission's context (the lane).
func checkLane(lane string) (string, error) {
	switch lane {
	case "":
		return LaneInteractive, nil
	case LaneInteractive, LaneBackground:
		return lane, nil
	}
	return "", errorf(ErrInvalid, "context must be interactive or background, got %q", lane)
}

// start records q (pending, created now) and runs it on the path of the
// configuration, or answers it from the cache: the part SQL and metric
// queries share.
func (s *Service) start(ctx context.Context, q store.Query, invalidate bool) (store.Query, error) {
	now := q.CreatedAt
	// An Idempotency-Key commits with the query row; a key already taken
	// undoes the insert (store.ErrIdempotencyTaken).
	idem := store.IdempotencyFrom(ctx)
	record := func(ctx context.Context, tx store.Tx) error {
		return idem.Record(ctx, tx, q.QueryUUID, api.Submitted{QueryUUID: q.QueryUUID,
			CacheMetadata: api.CacheMetadata{CacheHit: q.CacheHit}}, now)
	}
	if !invalidate {
		hit, err := store.ReadValue(ctx, s.st, func(qq store.Querier) (store.Query, error) {
			return qq.QueryCached(ctx, q.ProjectID, q.CacheKey, now)
		})
		if err == nil && targetOf(hit) != targetOf(q) {
			// A pre-aggregate query that fell back to the warehouse keeps
			// its key; its result must not be reported as a hit.
			err = store.ErrNotFound
		}
		if err == nil {
			// A fresh hit is ready at once and shares the stored result.
			q.Status, q.CacheHit, q.Columns, q.TotalRows, q.ResultKey = api.QueryReady, true, hit.Columns, hit.TotalRows, hit.ResultKey
			q.StartedAt, q.EndedAt, q.ExpiresAt = &now, &now, hit.ExpiresAt
			err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
				if err := tx.QueryInsert(ctx, q); err != nil {
					return err
				}
				return record(ctx, tx)
			})
			if err != nil {
				return store.Query{}, err
			}
			mCacheHits.Inc()
			return q, err
		} else if !errors.Is(err, store.ErrNotFound) {
			return store.Query{}, err
		}
	}
	if s.cfg.NATSEnabled {
		// The history row, its queued status and the notification commit
		// together: NATS losing the message loses nothing.
		q.Status, q.PublishedAt, q.Publishes = api.QueryQueued, &now, 1
		err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			if err := tx.QueryInsert(ctx, q); err != nil {
				return err
			}
			if err := record(ctx, tx); err != nil {
				return err
			}
			return s.enqueue(ctx, tx, q, q.QueryUUID, now)
		})
		if err != nil {
			return store.Query{}, err
		}
		mSubmitted.WithLabelValues("nats", q.Lane).Inc()
		s.wake()
		return q, nil
	}
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		if err := tx.QueryInsert(ctx, q); err != nil {
			return err
		}
		return record(ctx, tx)
	})
	if err != nil {
		return store.Query{}, err
	}
	mSubmitted.WithLabelValues("inprocess", q.Lane).Inc()
	s.startInProcess(q)
	return q, nil
}

// Get loads a query of project (404 if it belongs elsewhere).
func (s *Service) Get(ctx context.Context, project, uuid string) (store.Project, store.Query, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return p, store.Query{}, err
	}
	q, err := store.ReadValue(ctx, s.st, func(qq store.Querier) (store.Query, error) {
		return qq.QueryGet(ctx, uuid)
	})
	if errors.Is(err, store.ErrNotFound) || (err == nil && q.ProjectID != p.ProjectID) {
		return p, q, errorf(ErrQueryNotFound, "query %s does not exist in project %s", uuid, project)
	}
	return p, q, err
}

// Page is one page of a ready query's results.
type Page struct {
	Rows           []map[string]any   `json:"rows"`
	Columns        []warehouse.Column `json:"columns"`
	TotalResults   int64              `json:"totalResults"`
	TotalPageCount int64              `json:"totalPageCount"`
	Page           int                `json:"page"`
	PageSize       int                `json:"pageSize"`
	NextPage       *int               `json:"nextPage,omitempty"`
	PreviousPage   *int               `json:"previousPage,omitempty"`
}

// ResultsPage reads one page; q must be ready.
func (s *Service) ResultsPage(ctx context.Context, q store.Query, page, size int) (Page, error) {
	if err := s.checkReadable(ctx, q); err != nil {
		return Page{}, err
	}
	if size == 0 {
		size = DefaultPageSize
	}
	if size < 1 || size > MaxPageSize {
		return Page{}, errorf(ErrInvalid, "pageSize must be between 1 and %d, got %d", MaxPageSize, size)
	}
	if page == 0 {
		page = 1
	}
	pages := (q.TotalRows + int64(size) - 1) / int64(size)
	if pages == 0 {
		pages = 1 // an empty result still has one (empty) page
	}
	if page < 1 || int64(page) > pages {
		return Page{}, errorf(ErrInvalid, "page %d is out of range: valid pages are 1 to %d at pageSize %d", page, pages, size)
	}
	rows, meta, err := s.results.Page(q.ResultKey, page, size)
	if errors.Is(err, results.ErrNotFound) {
		return Page{}, errorf(ErrResultsExpired, "the results of query %s are gone (expired); run the query again", q.QueryUUID)
	}
	if err != nil {
		return Page{}, err
	}
	if rows == nil {
		rows = []map[string]any{}
	}
	out := Page{Rows: rows, Columns: meta.Columns, TotalResults: meta.TotalRows, TotalPageCount: pages, Page: page, PageSize: size}
	if int64(page) < pages {
		n := page + 1
		out.NextPage = &n
	}
	if page > 1 {
		p := page - 1
		out.PreviousPage = &p
	}
	return out, nil
}

// checkReadable turns a query that has no readable results into the error
// a client can act on.
func (s *Service) checkReadable(ctx context.Context, q store.Query) error {
	switch q.Status {
	case api.QueryReady:
		if q.ExpiresAt != nil && !q.ExpiresAt.After(s.now()) {
			return errorf(ErrResultsExpired, "the results of query %s expired at %s (CACHE_STALE_TIME_SECONDS); run the query again", q.QueryUUID, q.ExpiresAt.Format(time.RFC3339))
		}
		return nil
	case api.QueryCancelled:
		return errorf(ErrNoResults, "query %s was cancelled; it has no results", q.QueryUUID)
	case api.QueryError:
		return errorf(ErrNoResults, "query %s failed: %s", q.QueryUUID, q.Error)
	case api.QueryExpired:
		return errorf(ErrResultsExpired, "query %s expired before it ran (waited longer than NATS_QUEUE_TIMEOUT_MS); run it again", q.QueryUUID)
	}
	return errorf(ErrNoResults, "query %s is %s; poll until it is ready", q.QueryUUID, q.Status)
}

// Readable returns the error a client gets for reading q's results (409
// for a query without results, 410 once they expired), or nil.
func (s *Service) Readable(ctx context.Context, q store.Query) error { return s.checkReadable(ctx, q) }

// StreamResults writes every row as NDJSON.
func (s *Service) StreamResults(ctx context.Context, q store.Query, w interface{ Write([]byte) (int, error) }) error {
	if err := s.checkReadable(ctx, q); err != nil {
		return err
	}
	err := s.results.Stream(q.ResultKey, w)
	if errors.Is(err, results.ErrNotFound) {
		return errorf(ErrResultsExpired, "the results of query %s are gone (expired); run the query again", q.QueryUUID)
	}
	return err
}

// Cancel stops a query: a compare-and-set to cancelled, so a late result
// can never overwrite it; a running in-process query is cancelled through
// its context (PostgreSQL stops executing it). Workers notice within a
// heartbeat and cancel theirs the same way.
func (s *Service) Cancel(ctx context.Context, project, uuid string) (store.Query, error) {
	_, q, err := s.Get(ctx, project, uuid)
	if err != nil {
		return q, err
	}
	now := s.now()
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		q, err = tx.QueryTransition(ctx, uuid, []api.QueryStatus{api.QueryPending, api.QueryQueued, api.QueryExecuting},
			api.QueryCancelled, store.QueryUpdate{EndedAt: &now}, now)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return q, errorf(ErrQueryEnded, "query %s is already %s", uuid, q.Status)
	}
	if err != nil {
		return q, err
	}
	s.mu.Lock()
	if cancel := s.running[uuid]; cancel != nil {
		cancel()
	}
	s.mu.Unlock()
	mFinished.WithLabelValues(string(api.QueryCancelled)).Inc()
	return q, nil
}

// History lists a project's queries, newest first.
func (s *Service) History(ctx context.Context, project string, offset, limit int) ([]store.Query, int64, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return nil, 0, err
	}
	var list []store.Query
	var total int64
	err = s.st.Read(ctx, func(q store.Querier) error {
		var err error
		list, total, err = q.QueryList(ctx, p.ProjectID, offset, limit)
		return err
	})
	return list, total, err
}

// QueueStats reports queued work for health and doctor.
func (s *Service) QueueStats(ctx context.Context) (store.QueueStats, error) {
	return store.ReadValue(ctx, s.st, func(q store.Querier) (store.QueueStats, error) {
		return q.QueueStats(ctx)
	})
}
