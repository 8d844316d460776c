package config

import (
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/bus"
)

// Defaults that are Millrace's own (the NATS ones live in package bus).
const (
	DefaultAddr = ":8082"
	// DefaultDevAddr keeps dev mode's API on this machine: it has no
	// authentication and runs shell steps.
	DefaultDevAddr       = "127.0.0.1:8082"
	DefaultServerURL     = "http://127.0.0.1:8082"
	DefaultDatabaseURL   = "sqlite:millrace.db"
	DefaultConcurrency   = 100 // per worker, as in the seeds
	DefaultShutdownGrace = 30 * time.Second
	DefaultMaxBodyBytes  = 8 << 20
	DefaultDevDataDir    = ".millrace"
	// DefaultMaxResultBytes keeps a worker's report well under the
	// server's DefaultMaxBodyBytes, JSON escaping included.
	DefaultMaxResultBytes = 4 << 20
	// DefaultLeaseTTL is how long a claim lives without a heartbeat.
	// Workers heartbeat at a third of it, so two missed beats still keep
	// the lease.
	DefaultLeaseTTL = 30 * time.Second
	// DefaultRedeliverAfter is how long an issued command may stay
	// unclaimed before the reaper notifies it again.
	DefaultRedeliverAfter = 30 * time.Second
	// DefaultReapInterval is how often the reaper scans for due commands.
	DefaultReapInterval = 5 * time.Second
)

// Log holds logging settings shared by every command.
type Log struct {
	Level  string
	Format string
}

func (l *Log) bind(s *Set) {
	s.String(&l.Level, "MILLRACE_LOG_LEVEL", "log-level", "info", "Log level: debug, info, warn or error.")
	s.String(&l.Format, "MILLRACE_LOG_FORMAT", "log-format", "text", "Log format: text or json.")
}

// NATS holds the JetStream contract settings.
type NATS struct {
	URL, User, Password, Stream, Subject, Consumer, Storage string
	TLSCA, TLSCert, TLSKey, CredsFile, NKeyFile             string
	MaxAge, AckWait, FetchTimeout, FetchHeartbeat           time.Duration
	MaxDeliver, MaxAckPending                               int
	MaxBytes                                                int
	// Replicas is the replica count of every stream, KV bucket and object
	// store Millrace creates (NATS_REPLICAS; 3 on a 3-node cluster).
	Replicas int
	// AllPools gives the default command consumer every worker pool's
	// steps (bus.AllPools). Not a setting: `millrace dev` sets it, whose
	// in-process workers run everything.
	AllPools bool
}

func (n *NATS) bind(s *Set, dev bool) {
	if dev {
		s.String(&n.URL, "NATS_URL", "nats-url", "", "NATS server URL for dev mode; empty starts an embedded NATS server on 127.0.0.1 (see --nats-port); may carry credentials.")
	} else {
		s.String(&n.URL, "NATS_URL", "nats-url", bus.DefaultURL, "NATS server URL; may carry credentials (nats://user:pass@host:4222).")
	}
	s.String(&n.User, "NATS_USER", "nats-user", "", "NATS user name (overrides credentials in NATS_URL).")
	s.String(&n.Password, "NATS_PASSWORD", "nats-password", "", "NATS password.")
	n.bindSecurity(s)
	s.String(&n.Stream, "NATS_STREAM", "nats-stream", bus.DefaultStream, "JetStream stream for command notifications.")
	s.String(&n.Subject, "NATS_SUBJECT", "nats-subject", bus.DefaultSubject, "Subject notifications are published on; the stream also takes SUBJECT.> for routing to a pool.")
	s.String(&n.Consumer, "NATS_CONSUMER", "nats-consumer", bus.DefaultConsumer, "Durable pull consumer shared by the worker pool.")
	s.String(&n.Storage, "NATS_STORAGE", "nats-storage", bus.DefaultStorage, "Stream storage when Millrace creates the stream: memory or file.")
	s.Seconds(&n.MaxAge, "NATS_MAX_AGE_SECONDS", "nats-max-age", bus.DefaultMaxAge, "Stream max_age when Millrace creates the stream.")
	s.Int(&n.MaxBytes, "NATS_MAX_BYTES", "nats-max-bytes", bus.DefaultMaxBytes, "Stream max_bytes when Millrace creates the stream (oldest messages are dropped when full; the reaper re-notifies lost ones); -1 for unlimited.")
	s.Seconds(&n.AckWait, "NOETL_WORKER_NATS_ACK_WAIT_SECONDS", "nats-ack-wait", bus.DefaultAckWait, "Consumer ack wait; workers send InProgress well within it.")
	s.Seconds(&n.FetchTimeout, "NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS", "nats-fetch-timeout", bus.DefaultFetchTimeout, "How long one pull request waits for messages.")
	s.Seconds(&n.FetchHeartbeat, "NOETL_WORKER_NATS_FETCH_HEARTBEAT_SECONDS", "nats-fetch-heartbeat", bus.DefaultFetchHeartbeat, "Idle heartbeat of a pull request (detects a dead server).")
	s.Int(&n.MaxDeliver, "NOETL_WORKER_NATS_MAX_DELIVER", "nats-max-deliver", bus.DefaultMaxDeliver, "Consumer max_deliver.")
	s.Int(&n.MaxAckPending, "NOETL_WORKER_NATS_MAX_ACK_PENDING", "nats-max-ack-pending", bus.DefaultMaxAckPending, "Consumer max_ack_pending: the cap on unacknowledged notifications across the whole pool.")
	n.bindReplicas(s)
}

// bindReplicas binds NATS_REPLICAS (every role that may create a stream or
// bucket, the gateway included).
func (n *NATS) bindReplicas(s *Set) {
	s.Int(&n.Replicas, "NATS_REPLICAS", "nats-replicas", bus.DefaultReplicas, "Replicas of every stream, KV bucket and object store Millrace creates (1-5; 3 on a 3-node NATS cluster). An existing stream with a different count is used unchanged and reported.")
}

// bindSecurity binds the NATS TLS and credential settings (every role that
// connects to NATS, the gateway included).
func (n *NATS) bindSecurity(s *Set) {
	s.String(&n.TLSCA, "NATS_TLS_CA", "nats-tls-ca", "", "PEM file of the CA that signed the NATS server's certificate; setting it (or a client certificate) turns TLS on.")
	s.String(&n.TLSCert, "NATS_TLS_CERT", "nats-tls-cert", "", "PEM client certificate for NATS mutual TLS (with NATS_TLS_KEY).")
	s.String(&n.TLSKey, "NATS_TLS_KEY", "nats-tls-key", "", "PEM private key of NATS_TLS_CERT.")
	s.String(&n.CredsFile, "NATS_CREDS", "nats-creds", "", "NATS .creds file (user JWT and nkey seed), as made by nsc.")
	s.String(&n.NKeyFile, "NATS_NKEY", "nats-nkey", "", "File holding a NATS user nkey seed (SU…).")
}

// Bus converts to the bus package's configuration.
func (n NATS) Bus(name string) bus.Config {
	pool := ""
	if n.AllPools {
		pool = bus.AllPools
	}
	return bus.Config{Pool: pool, URL: n.URL, User: n.User, Password: n.Password, Stream: n.Stream, Subject: n.Subject,
		Consumer: n.Consumer, Storage: n.Storage, MaxAge: n.MaxAge, MaxBytes: int64(n.MaxBytes), MaxDeliver: n.MaxDeliver,
		MaxAckPending: n.MaxAckPending, AckWait: n.AckWait, FetchTimeout: n.FetchTimeout,
		FetchHeartbeat: n.FetchHeartbeat, Name: name, Replicas: n.Replicas,
		TLSCA: n.TLSCA, TLSCert: n.TLSCert, TLSKey: n.TLSKey, CredsFile: n.CredsFile, NKeyFile: n.NKeyFile}
}

// Server holds `millrace server` settings.
type Server struct {
	Log            Log
	NATS           NATS
	Addr           string
	DatabaseURL    string
	PublicURL      string
	NodeID         int
	LeaseTTL       time.Duration
	RedeliverAfter time.Duration
	ReapInterval   time.Duration
	MaxBodyBytes   int
	Query          Query
	PreAgg         PreAgg
	Auth           Auth
	// UpdatesPrefix is where execution lifecycle events are published
	// after commit (<prefix><execution_id>), for gateways and the UI.
	UpdatesPrefix string
	// LivePoll is how often a live stream re-reads the event table without
	// a wake-up (a lost note costs at most this much delay).
	LivePoll time.Duration
	// SecretKey seals credentials at rest (see package secret).
	SecretKey string
	// Migrate applies pending migrations at start (false when a Helm hook
	// Job runs `millrace migrate` before the servers roll).
	Migrate bool
	// MetricsInterval is how often the server samples the store and NATS
	// for its operational gauges (package monitor).
	MetricsInterval time.Duration
	// Retention is how long a finished execution's rows are kept (0:
	// forever); see package retention.
	Retention time.Duration
	// CatalogCacheTTL bounds how long a server trusts its cached "latest
	// version" of a playbook path without a word from another server.
	CatalogCacheTTL time.Duration
	Telemetry       Telemetry
	// Budgets bound what one user-supplied playbook can make the server do.
	Budgets Budgets
	// MaxInflightWrites bounds the write requests (submits, claims,
	// reports) a server holds at once; past it the API sheds with 429.
	MaxInflightWrites int
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	IdempotencyTTL time.Duration
	// SecretKeys are older keys that still open credentials sealed under
	// them (MILLRACE_SECRET_KEYS); SecretKey seals.
	SecretKeys string
}

func (c *Server) bind(s *Set, dev bool) {
	c.Log.bind(s)
	c.NATS.bind(s, dev)
	if dev {
		s.String(&c.Addr, "MILLRACE_ADDR", "addr", DefaultDevAddr, "Address dev mode's API server listens on (loopback by default; :8082 for every interface).")
	} else {
		s.String(&c.Addr, "MILLRACE_ADDR", "addr", DefaultAddr, "Address the API server listens on.")
	}
	if !dev {
		s.String(&c.DatabaseURL, "DATABASE_URL", "database-url", DefaultDatabaseURL, databaseURLHelp)
	}
	s.String(&c.PublicURL, "SERVER_API_URL", "server-url", "", "URL workers use to reach this server, sent in every notification (default: derived from --addr).")
	s.Int(&c.NodeID, "MILLRACE_NODE_ID", "node-id", -1, "ID generator node (0-1023); servers sharing a database need distinct ones. -1: with PostgreSQL each server takes the next node from a database sequence, with SQLite a random one.")
	s.Seconds(&c.LeaseTTL, "MILLRACE_LEASE_SECONDS", "lease", DefaultLeaseTTL, "Claim lease length; workers heartbeat at a third of it.")
	s.Seconds(&c.RedeliverAfter, "MILLRACE_REDELIVER_AFTER_SECONDS", "redeliver-after", DefaultRedeliverAfter, "Re-notify a command that stayed unclaimed this long.")
	s.Seconds(&c.ReapInterval, "MILLRACE_REAP_INTERVAL_SECONDS", "reap-interval", DefaultReapInterval, "How often the reaper scans for unclaimed commands and expired leases.")
	s.Int(&c.MaxBodyBytes, "MILLRACE_MAX_BODY_BYTES", "max-body-bytes", DefaultMaxBodyBytes, "Largest accepted request body; larger ones get 413.")
	c.Query.bind(s, true)
	c.PreAgg.bind(s, true)
	c.Auth.bind(s)
	s.String(&c.UpdatesPrefix, "NATS_UPDATES_SUBJECT_PREFIX", "nats-updates-prefix", bus.DefaultUpdatesPrefix, "Subject prefix the server publishes execution lifecycle events on after commit (PREFIX<execution_id>); gateways listen on it. A wake-up only: the event table is the truth.")
	s.Seconds(&c.LivePoll, "MILLRACE_LIVE_POLL_SECONDS", "live-poll", 5*time.Second, "How often a live stream (GET /api/executions/{id}/stream, /api/stream) re-reads the event table when no note woke it: the most a lost note delays an event.")
	if !dev {
		s.Bool(&c.Migrate, "MILLRACE_MIGRATE", "migrate", true, "Apply pending database migrations at start. The Helm chart sets false and runs `millrace migrate` in a pre-install/pre-upgrade hook Job instead, so servers never race a migration.")
	} else {
		c.Migrate = true
	}
	s.Seconds(&c.MetricsInterval, "MILLRACE_METRICS_INTERVAL_SECONDS", "metrics-interval", DefaultMetricsInterval, "How often the server samples the store and NATS for its gauges (outbox, unclaimed commands, consumer lag, executions by status) and for `millrace doctor`.")
	s.Duration(&c.Retention, "MILLRACE_RETENTION", "retention", 0, "Delete finished executions (their events, commands, loops and results) this long after they ended, e.g. 30d or 720h; 0 keeps everything. On PostgreSQL the event table is partitioned by day and old partitions are dropped whole; on SQLite rows are deleted in bounded batches.")
	s.Seconds(&c.CatalogCacheTTL, "MILLRACE_CATALOG_CACHE_SECONDS", "catalog-cache", DefaultCatalogCacheTTL, "How long a server trusts its cached latest version of a playbook path. Registering a playbook tells every server at once over NATS; this bounds the staleness only when that word is lost. 0 reads the catalog on every submit.")
	c.Telemetry.bind(s, "millrace-server")
	s.String(&c.SecretKey, "MILLRACE_SECRET_KEY", "secret-key", "", "Key that encrypts credentials at rest: 64 hex characters or base64 of 32 bytes (make one with: openssl rand -hex 32); without it the credential API answers 503 secret_key_missing. Prefer the environment variable to the flag, which shows in process listings.")
	s.String(&c.SecretKeys, "MILLRACE_SECRET_KEYS", "secret-keys", "", "Older credential keys, comma-separated, in the same format as MILLRACE_SECRET_KEY: credentials sealed under any of them still open, and are sealed again under MILLRACE_SECRET_KEY when next written. Rotate by moving the old key here and setting a new MILLRACE_SECRET_KEY.")
	c.Budgets.bind(s, true)
	s.Int(&c.MaxInflightWrites, "MILLRACE_MAX_INFLIGHT_WRITES", "max-inflight-writes", DefaultMaxInflightWrites, "Write requests (submits, claims, reports, registers) one server holds at once; past it the API answers 429 overloaded with Retry-After instead of queueing without bound. Clients, the CLI and workers retry with backoff.")
	s.Seconds(&c.IdempotencyTTL, "MILLRACE_IDEMPOTENCY_SECONDS", "idempotency-ttl", DefaultIdempotencyTTL, "How long the server remembers an Idempotency-Key of POST /api/execute or a query submit: a retry with the same key within it returns the first execution or query instead of starting another.")
}

// Budgets bound the work one user-supplied playbook can make a process do.
// A budget that is hit fails that execution (or command) with an error
// naming the setting and its limit; it never harms other work.
type Budgets struct {
	// TemplateTimeout bounds one template rendering (server and worker).
	TemplateTimeout time.Duration
	// TemplateMaxBytes bounds one rendering's output (server and worker).
	TemplateMaxBytes int
	// LoopMaxItems bounds the items one loop step may iterate (server).
	LoopMaxItems int
	// MaxWorkloadBytes bounds an execution's workload with its payload, as
	// JSON (server).
	MaxWorkloadBytes int
	// MaxChildDepth bounds how deep child playbooks nest (server).
	MaxChildDepth int
}

// bind binds the budgets; server is false for a worker, which renders
// templates but starts no loops or executions of its own.
func (b *Budgets) bind(s *Set, server bool) {
	s.Millis(&b.TemplateTimeout, "MILLRACE_TEMPLATE_TIMEOUT_MS", "template-timeout-ms", DefaultTemplateTimeout, "Longest one template rendering may take (a step's config, a loop's items, a condition); past it the execution (or command) fails naming this setting. Rendering also stops when its request or the process ends.")
	s.Int(&b.TemplateMaxBytes, "MILLRACE_TEMPLATE_MAX_BYTES", "template-max-bytes", DefaultTemplateMaxBytes, "Largest output one template rendering may produce; past it the rendering stops and the execution (or command) fails naming this setting.")
	if !server {
		return
	}
	s.Int(&b.LoopMaxItems, "MILLRACE_LOOP_MAX_ITEMS", "loop-max-items", DefaultLoopMaxItems, "Most items one loop step may iterate; a loop over more fails its execution naming this setting.")
	s.Int(&b.MaxWorkloadBytes, "MILLRACE_MAX_WORKLOAD_BYTES", "max-workload-bytes", DefaultMaxWorkloadBytes, "Largest workload (the playbook's workload merged with the submitted payload, as JSON) an execution may start with; a larger submit gets 422 budget_exceeded, a larger child fails its parent's step.")
	s.Int(&b.MaxChildDepth, "MILLRACE_MAX_CHILD_DEPTH", "max-child-depth", DefaultMaxChildDepth, "How deep child playbooks may nest (a top-level execution is depth 0); a deeper start fails the parent's step naming this setting, so a playbook that calls itself stops.")
}

// The budgets' and overload defaults.
const (
	DefaultTemplateTimeout   = 2 * time.Second
	DefaultTemplateMaxBytes  = 4 << 20
	DefaultLoopMaxItems      = 100_000
	DefaultMaxWorkloadBytes  = 1 << 20
	DefaultMaxChildDepth     = 16
	DefaultMaxInflightWrites = 1024
	DefaultIdempotencyTTL    = 24 * time.Hour
)

// Worker holds `millrace worker` settings.
type Worker struct {
	Log            Log
	NATS           NATS
	Stream         string // commands | warehouse
	Query          Query
	PreAgg         PreAgg
	ServerURL      string
	WorkerID       string
	Concurrency    int
	ShutdownGrace  time.Duration
	MetricsAddr    string
	MaxResultBytes int
	// Token is the worker's API token (role worker); empty with auth off.
	Token string
	// AckOn is when a commands worker acknowledges a notification: "claim"
	// (once the claim committed; the lease and the reaper own the command
	// from then on) or "completion" (once the server accepted the report).
	AckOn string
	// Budgets: the template budgets apply to a worker's renderings (dev
	// copies the server's).
	Budgets Budgets
	// Pool routes a commands worker to the pool's subject
	// (NATS_SUBJECT.<pool>) and consumer (NATS_CONSUMER_<pool>); empty is
	// the default pool.
	Pool      string
	Telemetry Telemetry
}

func (c *Worker) bind(s *Set, dev bool) {
	if !dev {
		c.Log.bind(s)
		c.NATS.bind(s, false)
		s.String(&c.ServerURL, "SERVER_API_URL", "server-url", DefaultServerURL, "URL of the Millrace API server.")
		s.String(&c.Stream, "MILLRACE_WORKER_STREAM", "stream", "commands", "What this worker runs: commands (flows, NOETL_COMMANDS), warehouse (queries, WAREHOUSE_QUERY_JOBS) or pre-aggregate (materializations and queries served from them, PRE_AGGREGATE_QUERY_JOBS).")
		c.Query.bind(s, false)
		c.PreAgg.bind(s, false)
		s.String(&c.Token, "MILLRACE_WORKER_TOKEN", "token", "", "API token of role worker the worker presents to the server (make one with: millrace token create --role worker); needed unless the server runs with MILLRACE_AUTH=none.")
		s.String(&c.MetricsAddr, "MILLRACE_WORKER_METRICS_ADDR", "metrics-addr", "", "Serve the worker's Prometheus /metrics and its /healthz probe on this address (e.g. :9090); empty turns it off.")
		c.Budgets.bind(s, false)
		s.String(&c.Pool, "MILLRACE_WORKER_POOL", "pool", "", "Worker pool of a commands worker: it takes only the steps routed to this pool (pool: NAME in the playbook), on subject NATS_SUBJECT.NAME through the durable consumer <NATS_CONSUMER>_NAME. Empty: the default pool (steps without a pool). A name is lower-case letters, digits and '-' (a DNS label).")
		c.Telemetry.bind(s, "millrace-worker")
	}
	s.String(&c.WorkerID, "MILLRACE_WORKER_ID", "worker-id", "", "Worker identity recorded on claims (default: host name, process id and four random hex digits, e.g. web-1-4242-a3f0; dev mode appends -N to a given one for each of its workers).")
	s.Int(&c.Concurrency, "NATS_WORKER_CONCURRENCY", "concurrency", DefaultConcurrency, "Commands one worker runs at once.")
	s.Seconds(&c.ShutdownGrace, "MILLRACE_SHUTDOWN_GRACE_SECONDS", "shutdown-grace", DefaultShutdownGrace, "On SIGTERM, how long running commands may finish before they are released.")
	s.Choice(&c.AckOn, "MILLRACE_WORKER_ACK", "ack", DefaultWorkerAck, []string{AckOnClaim, AckOnCompletion}, "When a commands worker acknowledges a notification: claim (once its claim is committed: the lease, its heartbeats and the reaper own the command from then on, so NOETL_WORKER_NATS_MAX_ACK_PENDING counts only notifications not yet claimed, and a dead worker's commands run again once their lease expires and the reaper re-notifies them) or completion (once the server accepted the command's report; NATS redelivers after NOETL_WORKER_NATS_ACK_WAIT_SECONDS). Warehouse and pre-aggregate workers always acknowledge on completion.")
	s.Int(&c.MaxResultBytes, "MILLRACE_MAX_RESULT_BYTES", "max-result-bytes", DefaultMaxResultBytes, "Largest tool result a worker reports (JSON); a larger one fails the command. Keep it under the server's MILLRACE_MAX_BODY_BYTES.")
}

// Dev holds `millrace dev` settings: a server, workers, embedded NATS and
// SQLite in one process.
type Dev struct {
	Server
	Worker
	DataDir  string
	Workers  int
	NATSPort int
}

// ServerSet, WorkerSet and DevSet bind the settings of each role.
func ServerSet(c *Server) *Set { s := &Set{}; c.bind(s, false); return s }

// WorkerSet binds worker settings.
func WorkerSet(c *Worker) *Set { s := &Set{}; c.bind(s, false); return s }

// DevSet binds dev settings.
func DevSet(c *Dev) *Set {
	s := &Set{}
	c.Server.bind(s, true)
	c.Worker.bind(s, true)
	s.String(&c.DataDir, "MILLRACE_DATA_DIR", "data-dir", DefaultDevDataDir, "Where dev mode keeps its SQLite event store (kept across restarts), and dev.json while it runs: client commands read it to find dev.")
	s.String(&c.Server.DatabaseURL, "DATABASE_URL", "database-url", "", "Event store for dev mode (default: sqlite:DATA_DIR/millrace.db).")
	s.Int(&c.Workers, "MILLRACE_DEV_WORKERS", "workers", 2, "In-process workers dev mode starts.")
	s.Int(&c.NATSPort, "MILLRACE_DEV_NATS_PORT", "nats-port", 4223, "Port of the embedded NATS server (-1 picks a free one).")
	return s
}

// BindNATS binds only the NATS settings (for inspection commands).
func BindNATS(s *Set, n *NATS) { n.bind(s, false) }

// BindNATSStreams binds the NATS settings and the names of the query and
// pre-aggregate streams: every stream Millrace uses, for the reports.
func BindNATSStreams(s *Set, n *NATS, q *Query, p *PreAgg) {
	n.bind(s, false)
	q.bindStream(s)
	p.bindStream(s)
}

// Query holds the warehouse-query face's settings (the Lightdash contract).
type Query struct {
	ProjectsFile string
	NATSEnabled  bool
	Concurrency  int
	StaleWorker  time.Duration
	ResultsDir   string
	QueueTimeout time.Duration
	CacheStale   time.Duration
	Stream       string
	Subject      string
	Consumer     string
}

// Query-face defaults.
const (
	DefaultResultsDir    = "millrace-results"
	DefaultQueueTimeout  = 180 * time.Second
	DefaultCacheStale    = 24 * time.Hour
	DefaultQueryStream   = "WAREHOUSE_QUERY_JOBS"
	DefaultQuerySubject  = "warehouse.query.jobs"
	DefaultQueryConsumer = "worker-warehouse"
)

func (q *Query) bind(s *Set, server bool) {
	if server {
		s.Bool(&q.NATSEnabled, "NATS_ENABLED", "nats-enabled", false, "Run warehouse queries on NATS workers (millrace worker --stream warehouse); false runs them in the API server. Flows always use NATS.")
		s.String(&q.ResultsDir, "MILLRACE_RESULTS_DIR", "results-dir", DefaultResultsDir, "Directory where query results are stored as files.")
		s.String(&q.ProjectsFile, "MILLRACE_PROJECTS_FILE", "projects-file", "", "YAML/JSON file of projects to create or update at start: projects: [{name, warehouse: {type, url}}]; ${VAR} is expanded.")
		s.Int(&q.Concurrency, "NATS_WORKER_CONCURRENCY", "query-concurrency", DefaultConcurrency, "With NATS_ENABLED=false: warehouse queries the server runs at once.")
		s.Millis(&q.QueueTimeout, "NATS_QUEUE_TIMEOUT_MS", "queue-timeout", DefaultQueueTimeout, "A query queued longer than this becomes expired and is not run.")
		s.Seconds(&q.StaleWorker, "MILLRACE_QUERY_STALE_WORKER_SECONDS", "query-stale-worker", 30*time.Second, "An executing query whose worker has not heartbeated for this long is re-queued (the worker died).")
		s.Seconds(&q.CacheStale, "CACHE_STALE_TIME_SECONDS", "cache-stale", DefaultCacheStale, "Query results expire after this; reading them then says to run the query again.")
	}
	q.bindStream(s)
	s.String(&q.Subject, "MILLRACE_QUERY_SUBJECT", "query-subject", DefaultQuerySubject, "Subject prefix of query jobs; lanes are SUBJECT.interactive and SUBJECT.background.")
	s.String(&q.Consumer, "MILLRACE_QUERY_CONSUMER", "query-consumer", DefaultQueryConsumer, "Durable consumer of the background lane (the interactive lane's is NAME-interactive).")
}

func (q *Query) bindStream(s *Set) {
	s.String(&q.Stream, "MILLRACE_QUERY_STREAM", "query-stream", DefaultQueryStream, "JetStream stream for warehouse query jobs.")
}

// PreAgg holds the pre-aggregate settings (the metrics layer's
// materializations, served from DuckDB).
type PreAgg struct {
	Enabled          bool
	MemoryLimit      string
	Threads          int
	MaxRows          int
	Storage          string // "" (auto) | dir | nats
	Dir              string
	Bucket           string
	CacheDir         string
	CacheMaxBytes    int
	BuildConcurrency int
	Stream           string
	QuerySubject     string
	BuildSubject     string
	Consumer         string
}

// Pre-aggregate defaults.
const (
	// DefaultPreAggMemoryLimit bounds each DuckDB that serves or builds
	// pre-aggregates. Lightdash's default is unlimited, and its users hit
	// OOM; a worker with the seeds' 4Gi request keeps headroom with 1GB.
	DefaultPreAggMemoryLimit = "1GB"
	DefaultPreAggThreads     = 2
	DefaultPreAggMaxRows     = 1_000_000
	DefaultPreAggDir         = "millrace-preaggregates"
	DefaultPreAggCacheBytes  = 2 << 30
)

func (p *PreAgg) bind(s *Set, server bool) {
	if server {
		s.Bool(&p.Enabled, "PRE_AGGREGATES_ENABLED", "pre-aggregates", true, "Serve matching metric queries from pre-aggregates and build them; false sends every metric query to the warehouse (miss reason PRE_AGGREGATES_DISABLED) and builds nothing.")
		s.Int(&p.MaxRows, "PRE_AGGREGATES_MAX_ROWS", "pre-aggregate-max-rows", DefaultPreAggMaxRows, "Largest materialization a build may write, unless the pre-aggregate sets max_rows; a bigger build fails and the previous one keeps serving.")
	}
	s.String(&p.Storage, "PRE_AGGREGATE_STORAGE", "pre-aggregate-storage", "", "Where materializations (Parquet) are kept: nats (a JetStream Object Store bucket) or dir (PRE_AGGREGATE_DIR, shared by the server and its workers); empty picks nats when NATS is used for pre-aggregates (NATS_ENABLED=true, and always for a worker), else dir.")
	s.String(&p.Dir, "PRE_AGGREGATE_DIR", "pre-aggregate-dir", DefaultPreAggDir, "Directory of materializations when PRE_AGGREGATE_STORAGE is dir (dev mode: DATA_DIR/preaggregates).")
	s.String(&p.MemoryLimit, "PRE_AGGREGATE_DUCKDB_QUERY_MEMORY_LIMIT", "pre-aggregate-memory-limit", DefaultPreAggMemoryLimit, "DuckDB memory_limit for serving and building pre-aggregates (e.g. 512MB, 2GB); DuckDB spills to disk or fails a query rather than exceed it.")
	s.Int(&p.Threads, "PRE_AGGREGATE_DUCKDB_THREADS", "pre-aggregate-threads", DefaultPreAggThreads, "DuckDB threads for serving and building pre-aggregates.")
	s.String(&p.Bucket, "PRE_AGGREGATE_OBJECT_BUCKET", "pre-aggregate-bucket", bus.DefaultPreAggObjectBucket, "JetStream Object Store bucket of materializations (PRE_AGGREGATE_STORAGE=nats).")
	s.String(&p.CacheDir, "PRE_AGGREGATE_CACHE_DIR", "pre-aggregate-cache-dir", "", "Local cache of materialization files fetched from the object store (default: a directory under the system's temporary directory).")
	s.Int(&p.CacheMaxBytes, "PRE_AGGREGATE_CACHE_MAX_BYTES", "pre-aggregate-cache-bytes", DefaultPreAggCacheBytes, "Size above which the local materialization cache evicts its least recently used files.")
	s.Int(&p.BuildConcurrency, "PRE_AGGREGATE_BUILD_CONCURRENCY", "pre-aggregate-build-concurrency", bus.DefaultPreAggBuildSlots, "Builds one pre-aggregate worker (or the server, with NATS_ENABLED=false) runs at once; the other slots serve queries.")
	p.bindStream(s)
	s.String(&p.QuerySubject, "PRE_AGGREGATE_QUERY_SUBJECT", "pre-aggregate-query-subject", bus.DefaultPreAggQuerySubject, "Subject of metric queries served from pre-aggregates.")
	s.String(&p.BuildSubject, "PRE_AGGREGATE_MATERIALIZATION_SUBJECT", "pre-aggregate-materialization-subject", bus.DefaultPreAggBuildSubject, "Subject of materialization (build) jobs.")
	s.String(&p.Consumer, "PRE_AGGREGATE_CONSUMER", "pre-aggregate-consumer", bus.DefaultPreAggConsumer, "Durable consumer of query jobs (builds use NAME-materialization).")
}

func (p *PreAgg) bindStream(s *Set) {
	s.String(&p.Stream, "PRE_AGGREGATE_STREAM", "pre-aggregate-stream", bus.DefaultPreAggStream, "JetStream stream of pre-aggregate jobs.")
}

// Auth holds the server's authentication settings.
type Auth struct {
	// Mode is AuthTokens (the default: every route but health, metrics,
	// login and the UI's files needs a token) or AuthNone.
	Mode string
	// CacheTTL is how long a server trusts a token it looked up before it
	// reads it again (revocation reaches other servers within it).
	CacheTTL        time.Duration
	SessionTTL      time.Duration
	OIDCIssuer      string
	OIDCClientID    string
	OIDCRolesClaim  string
	OIDCDefaultRole string
}

// Auth modes.
const (
	AuthTokens = "tokens"
	AuthNone   = "none"
)

// Auth defaults.
const (
	DefaultAuthCacheTTL  = 10 * time.Second
	DefaultSessionTTL    = 8 * time.Hour
	DefaultOIDCRoleClaim = "roles"
)

func (a *Auth) bind(s *Set) {
	s.String(&a.Mode, "MILLRACE_AUTH", "auth", AuthTokens, "tokens: every API route but /api/health, /metrics, login and the UI's files needs an API token or session (Authorization: Bearer); none: anyone who reaches the server may do anything (logged as a warning at every start).")
	s.Seconds(&a.CacheTTL, "MILLRACE_AUTH_CACHE_SECONDS", "auth-cache", DefaultAuthCacheTTL, "How long a server trusts a token it has looked up; a token revoked on another server stops working within this.")
	s.Seconds(&a.SessionTTL, "MILLRACE_SESSION_TTL_SECONDS", "session-ttl", DefaultSessionTTL, "Lifetime of a login session (POST /api/auth/login).")
	s.String(&a.OIDCIssuer, "OIDC_ISSUER_URL", "oidc-issuer", "", "OpenID Connect issuer whose id_tokens may log in (discovery at ISSUER/.well-known/openid-configuration); empty turns OIDC login off.")
	s.String(&a.OIDCClientID, "OIDC_CLIENT_ID", "oidc-client-id", "", "The audience an id_token must carry (the client id registered with the issuer).")
	s.String(&a.OIDCRolesClaim, "OIDC_ROLES_CLAIM", "oidc-roles-claim", DefaultOIDCRoleClaim, "id_token claim (a string or a list) naming the user's Millrace role: admin, operator or viewer; the highest one listed wins.")
	s.String(&a.OIDCDefaultRole, "OIDC_DEFAULT_ROLE", "oidc-default-role", "viewer", "Role of an OIDC user whose id_token names none (viewer, operator, admin, or none to refuse them).")
}

// Gateway holds `millrace gateway` settings (the NoETL gateway contract).
type Gateway struct {
	Log             Log
	NATS            NATS
	Addr            string
	ServerURL       string
	PublicURL       string
	Token           string
	UpdatesPrefix   string
	CallbackPrefix  string
	SessionBucket   string
	SessionCacheTTL time.Duration
	RequestBucket   string
	RequestTTL      time.Duration
	CORSOrigins     string
	Heartbeat       time.Duration
	MaxWait         time.Duration
	MaxBodyBytes    int
	IngressFile     string
	Telemetry       Telemetry
}

// Gateway defaults.
const (
	DefaultGatewayAddr     = ":8090" // NoETL's gateway port
	DefaultSessionCacheTTL = 300 * time.Second
	DefaultRequestTTL      = 1800 * time.Second
	// DefaultCORSOrigins admits pages served from this machine only.
	DefaultCORSOrigins      = "http://localhost:*,http://127.0.0.1:*,https://localhost:*"
	DefaultGatewayHeartbeat = 30 * time.Second
	DefaultGatewayMaxWait   = 300 * time.Second
)

func (g *Gateway) bind(s *Set) {
	g.Log.bind(s)
	s.String(&g.NATS.URL, "NATS_URL", "nats-url", bus.DefaultURL, "NATS server URL (live updates, callbacks, the sessions and requests buckets); may carry credentials.")
	s.String(&g.NATS.User, "NATS_USER", "nats-user", "", "NATS user name (overrides credentials in NATS_URL).")
	s.String(&g.NATS.Password, "NATS_PASSWORD", "nats-password", "", "NATS password.")
	g.NATS.bindSecurity(s)
	g.NATS.bindReplicas(s)
	s.String(&g.Addr, "MILLRACE_GATEWAY_ADDR", "addr", DefaultGatewayAddr, "Address the gateway listens on.")
	s.String(&g.ServerURL, "SERVER_API_URL", "server-url", DefaultServerURL, "URL of the Millrace API server the gateway forwards to.")
	s.String(&g.PublicURL, "GATEWAY_PUBLIC_URL", "public-url", "", "URL clients and playbooks reach this gateway at (sent to playbooks as gateway_url for callbacks; default: derived from --addr).")
	s.String(&g.Token, "MILLRACE_GATEWAY_TOKEN", "token", "", "API token (role operator) the gateway starts webhook-ingress executions with; ingress is off without it.")
	s.String(&g.UpdatesPrefix, "NATS_UPDATES_SUBJECT_PREFIX", "nats-updates-prefix", bus.DefaultUpdatesPrefix, "Subject prefix of execution lifecycle events; must match the server's.")
	s.String(&g.CallbackPrefix, "NATS_CALLBACK_SUBJECT_PREFIX", "nats-callback-prefix", bus.DefaultCallbackPrefix, "Subject prefix execute-and-wait results fan out on between gateway replicas (PREFIX.<request_id>).")
	s.String(&g.SessionBucket, "NATS_SESSION_BUCKET", "nats-session-bucket", bus.DefaultSessionBucket, "JetStream KV bucket that caches sessions (the database holds the truth).")
	s.Seconds(&g.SessionCacheTTL, "NATS_SESSION_CACHE_TTL_SECS", "session-cache-ttl", DefaultSessionCacheTTL, "How long a cached session is trusted before the gateway asks the server again.")
	s.String(&g.RequestBucket, "NATS_REQUEST_BUCKET", "nats-request-bucket", bus.DefaultRequestBucket, "JetStream KV bucket of pending execute-and-wait requests.")
	s.Seconds(&g.RequestTTL, "NATS_REQUEST_TTL_SECS", "request-ttl", DefaultRequestTTL, "How long a pending request is kept.")
	s.String(&g.CORSOrigins, "CORS_ALLOWED_ORIGINS", "cors-allowed-origins", DefaultCORSOrigins, "Comma-separated origins browsers may call the gateway from; * in the port matches any port; a lone * admits every origin (not with credentials).")
	s.Seconds(&g.Heartbeat, "GATEWAY_HEARTBEAT_INTERVAL_SECS", "heartbeat", DefaultGatewayHeartbeat, "Interval of the SSE ping frame on /events.")
	s.Seconds(&g.MaxWait, "GATEWAY_MAX_WAIT_SECONDS", "max-wait", DefaultGatewayMaxWait, "Longest execute-and-wait a client may ask for.")
	s.Int(&g.MaxBodyBytes, "MILLRACE_MAX_BODY_BYTES", "max-body-bytes", DefaultMaxBodyBytes, "Largest accepted request body; larger ones get 413.")
	s.String(&g.IngressFile, "MILLRACE_INGRESS_FILE", "ingress-file", "", "YAML/JSON file of webhook listeners: ingress: [{name, playbook, secret_env}]; POST /ingress/NAME must carry X-Millrace-Signature: sha256=HMAC(secret, body).")
	g.Telemetry.bind(s, "millrace-gateway")
}

// DefaultMetricsInterval is how often a server samples its gauges.
const DefaultMetricsInterval = 15 * time.Second

// Telemetry holds the OpenTelemetry trace settings: the standard OTEL_*
// variables, each with a flag. Tracing is off unless an OTLP endpoint is
// set (package telemetry).
type Telemetry struct {
	Exporter       string // OTEL_TRACES_EXPORTER: otlp or none
	Endpoint       string // OTEL_EXPORTER_OTLP_ENDPOINT
	TracesEndpoint string // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
	Protocol       string // OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf or grpc
	ServiceName    string // OTEL_SERVICE_NAME
	Sampler        string // OTEL_TRACES_SAMPLER
	SamplerArg     string // OTEL_TRACES_SAMPLER_ARG
}

func (t *Telemetry) bind(s *Set, service string) {
	s.String(&t.Exporter, "OTEL_TRACES_EXPORTER", "otel-traces-exporter", "otlp", "Trace exporter: otlp or none. Traces are sent only when an OTLP endpoint is set as well.")
	s.String(&t.Endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT", "otel-endpoint", "", "OTLP endpoint for traces (e.g. http://otel-collector:4318); empty turns tracing off.")
	s.String(&t.TracesEndpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "otel-traces-endpoint", "", "OTLP endpoint for traces only; overrides OTEL_EXPORTER_OTLP_ENDPOINT.")
	s.String(&t.Protocol, "OTEL_EXPORTER_OTLP_PROTOCOL", "otel-protocol", "http/protobuf", "OTLP protocol: http/protobuf or grpc.")
	s.String(&t.ServiceName, "OTEL_SERVICE_NAME", "otel-service-name", service, "service.name of this process's spans.")
	s.String(&t.Sampler, "OTEL_TRACES_SAMPLER", "otel-sampler", "parentbased_always_on", "Sampler: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio.")
	s.String(&t.SamplerArg, "OTEL_TRACES_SAMPLER_ARG", "otel-sampler-arg", "", "Sampler argument (the ratio for the traceidratio samplers, 0..1).")
}

// GatewaySet binds gateway settings.
func GatewaySet(c *Gateway) *Set { s := &Set{}; c.bind(s); return s }

// DefaultCatalogCacheTTL is MILLRACE_CATALOG_CACHE_SECONDS's default.
const DefaultCatalogCacheTTL = 5 * time.Second

// MILLRACE_WORKER_ACK's values: when a commands worker acknowledges a
// notification.
const (
	AckOnClaim      = "claim"
	AckOnCompletion = "completion"
)

// DefaultWorkerAck is MILLRACE_WORKER_ACK's default (see docs/decisions.md,
// "ack on claim").
const DefaultWorkerAck = AckOnClaim

// CheckWorkerAck refuses a MILLRACE_WORKER_ACK value other than claim or
// completion (for a Worker built in code rather than read from settings).
func CheckWorkerAck(v string) error {
	if v != AckOnClaim && v != AckOnCompletion {
		return fmt.Errorf("MILLRACE_WORKER_ACK (--ack) must be %s or %s, got %q", AckOnClaim, AckOnCompletion, v)
	}
	return nil
}
