// Package store owns Millrace's durable state: the event log (the single
// source of truth), the commands projection with its leases, executions, the
// playbook catalog and the outbox that feeds NATS.
//
// The seam is Driver/Tx. Two drivers implement it (pgdriver for PostgreSQL,
// sqlitedriver for SQLite) and both must pass the conformance suite in
// storetest. Callers never talk to a driver directly for writes: they go
// through Store.Do, which batches concurrent callers into one transaction
// (group commit); when a caller fails, the batch re-runs with each caller in
// its own savepoint, so one caller's error never undoes another's work.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// Sentinel errors every driver returns (possibly wrapped).
var (
	// ErrNotFound: the row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the state transition is not allowed right now (a live
	// claim is held by someone else, the command already ended, a stale
	// attempt number, an execution that is no longer running).
	ErrConflict = errors.New("conflict")
	// ErrNotYours: the caller names the holder of a live claim (its worker
	// and attempt) but the claim was made with another worker token
	// (Command.ClaimTokenID). Nothing changed: the holder keeps its lease.
	ErrNotYours = errors.New("claimed with another worker token")
)

// CatalogEntry is one registered version of a playbook.
type CatalogEntry struct {
	CatalogID int64
	Path      string
	Version   int
	Name      string
	Content   string
	CreatedAt time.Time
}

// Execution is one run of a playbook version.
type Execution struct {
	ExecutionID int64
	CatalogID   int64
	Path        string
	Version     int
	Status      api.ExecStatus
	Workload    json.RawMessage // merged workload + payload, a JSON object
	StartedAt   time.Time
	EndedAt     *time.Time
	Result      json.RawMessage
	Error       string
	// ParentExecutionID is set for executions started by a `playbook` tool.
	ParentExecutionID int64
	// Depth is how deep the execution nests: 0 for a top-level one, its
	// parent's + 1 for a child (bounded by MILLRACE_MAX_CHILD_DEPTH).
	Depth int
	// ParentCommandID is the event_id of the parent's command that started
	// this child (0: none). With ParentTask (the task's index in that
	// command's task list; 0 for a single tool) it is unique: a re-run of
	// the command finds this child instead of starting a second one.
	ParentCommandID int64
	ParentTask      int
	// ParentAttempt is the attempt of that command that started the child.
	ParentAttempt int
	// Context holds the values playbooks assign with `set` (a JSON object,
	// nil until the first set).
	Context json.RawMessage
	// Revision is the token the last transaction that changed what the
	// engine derives from the execution's rows set (Tx.ExecutionTouch); 0
	// until the first. Only LockExecution fills it.
	Revision int64
}

// Event is one immutable fact in the log.
type Event struct {
	EventID     int64
	ExecutionID int64
	EventType   string
	Step        string
	CommandID   string
	Status      string // the command's or, for playbook.* events, the execution's status
	Result      json.RawMessage
	Error       string
	WorkerID    string
	Attempt     int
	CreatedAt   time.Time
}

// Command is the projection of one issued unit of work. Its key is the
// event_id of the command.issued event that created it.
type Command struct {
	EventID      int64
	ExecutionID  int64
	CommandID    string // "<execution_id>:<step>:<event_id>"
	Step         string
	Tool         json.RawMessage // rendered tool config, a JSON object with "kind"
	Input        json.RawMessage // render context snapshot, may be null
	Status       api.CommandStatus
	Attempt      int // 0 until first claim
	WorkerID     string
	LeaseExpires *time.Time
	Result       json.RawMessage
	Error        string
	// Publishes counts how many notifications were ever asked for this
	// command; it derives each one's Nats-Msg-Id (bus.NotifyMsgID).
	Publishes   int
	PublishedAt time.Time // last time a notification was asked for (or becomes available)
	// AvailableAt is when the command may first be notified (a retry's
	// backoff); it equals CreatedAt for ordinary commands.
	AvailableAt time.Time
	LoopID      int64 // the loop instance this iteration belongs to; 0 if none
	LoopIndex   int   // iteration index within the loop
	Retry       int   // policy retries that preceded this command for the same step run
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// TraceParent is the W3C traceparent CommandInsert records for the
	// first notification ("" when tracing is off). Write-only: reads of
	// Command leave it empty; Notice carries it to the relay.
	TraceParent string
	// ClaimTokenID is the id of the worker token that made the current
	// claim (0: none, as with auth off). While it is not 0, only that
	// token may start, heartbeat, finish or release the command.
	ClaimTokenID int64
	// Pool is the worker pool the step is routed to ("" is the default
	// pool): its notifications go to NATS_SUBJECT.<pool>.
	Pool string
}

// OutboxMsg is a notification waiting to be published to NATS.
type OutboxMsg struct {
	ID        int64
	EventID   int64 // the command this notifies about
	Subject   string
	MsgID     string // Nats-Msg-Id header
	Payload   []byte
	CreatedAt time.Time
	// AvailableAt: the publisher leaves the row alone until then (retry
	// backoff). Zero means CreatedAt.
	AvailableAt time.Time
	// TraceParent is the W3C traceparent of the span that wrote the row
	// ("" when tracing is off); the relay sends it as a message header.
	TraceParent string
}

// Loop is one run of a looping step. Its progress is never stored as a
// counter: it is derived from the iteration command rows (LoopID), so it
// cannot drift.
type Loop struct {
	LoopID      int64 // the event id of its loop.started event
	ExecutionID int64
	Step        string
	Total       int
	Mode        string // sequential | parallel
	MaxInFlight int
	Items       json.RawMessage // the rendered list, a JSON array
	Status      api.LoopStatus
	Result      json.RawMessage // the ordered iteration results, set by LoopFinish
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Credential is a named secret. Data is sealed (encrypted) by the caller;
// the store never sees plaintext.
type Credential struct {
	Name        string
	Kind        string // postgres, http, nats, generic, ...
	Description string
	Data        []byte
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// ClaimParams describes a claim attempt.
type ClaimParams struct {
	EventID  int64
	WorkerID string
	Now      time.Time
	LeaseTTL time.Duration
	// TokenID is the claiming worker's token id (auth.ClaimTokenID), 0
	// when there is none; it is recorded as Command.ClaimTokenID.
	TokenID int64
	// Start moves the command straight to running (claim and start in one
	// statement): a worker that runs what it claims at once saves a round
	// trip.
	Start bool
}

// FinishParams describes a terminal report from a worker.
type FinishParams struct {
	EventID  int64
	WorkerID string
	Attempt  int
	Status   api.CommandStatus // api.CmdCompleted or api.CmdFailed
	Result   json.RawMessage
	Error    string
	TokenID  int64 // the reporter's token id: must match a non-zero ClaimTokenID
	Now      time.Time
}

// Stats is a cheap summary for health and metrics.
type Stats struct {
	ExecutionsRunning int64
	CommandsPending   int64 // issued, claimed or running
	OutboxDepth       int64 // pending command notifications plus outbox rows
}

// OpsStats is the operational picture package monitor samples: what
// waits in the database, since when, and the database's own clock. Every
// figure comes from an indexed read, so sampling stays cheap on a large
// history. The database's clock is DBClock's: a statement of several
// subqueries takes long enough to blur a skew measurement.
type OpsStats struct {
	// OutboxDepth counts notifications waiting to be published: pending
	// command notifications plus outbox rows; OutboxOldest is when the
	// oldest one already due became due (nil: none is due yet).
	OutboxDepth  int64
	OutboxOldest *time.Time
	// CommandsUnclaimed counts issued commands; UnclaimedOldest is the
	// AvailableAt of the oldest one already available (a retry waiting
	// out its backoff is not late).
	CommandsUnclaimed int64
	UnclaimedOldest   *time.Time
	// ExpiredLeases counts claimed or running commands whose lease
	// expired before now; ExpiredOldest is the earliest such expiry.
	ExpiredLeases int64
	ExpiredOldest *time.Time
	// Executions counts executions by non-terminal status
	// (api.ExecLiveStatuses), every one present.
	Executions map[api.ExecStatus]int64
	// QueriesQueued counts queued queries by lane (interactive,
	// background; a metric query a pre-aggregate serves counts under
	// QueueLanePreAgg), every one of QueueLanes present.
	QueriesQueued map[string]int64
}

// QueueLanePreAgg is the lane OpsStats counts queued pre-aggregate
// queries under; QueueLanes are every lane it reports.
const QueueLanePreAgg = "pre-aggregate"

// QueueLanes are the lanes OpsStats.QueriesQueued always holds.
var QueueLanes = []string{"interactive", "background", QueueLanePreAgg}

// NewOpsStats is an OpsStats with every execution status and lane at 0;
// drivers fill it.
func NewOpsStats() OpsStats {
	s := OpsStats{Executions: map[api.ExecStatus]int64{}, QueriesQueued: map[string]int64{}}
	for _, st := range api.ExecLiveStatuses {
		s.Executions[st] = 0
	}
	for _, l := range QueueLanes {
		s.QueriesQueued[l] = 0
	}
	return s
}

// NodeAllocator is implemented by drivers shared by several server
// processes (PostgreSQL): it hands each process a distinct id-generator
// node so their ids cannot collide.
type NodeAllocator interface {
	AllocateNode(ctx context.Context) (int, error)
}

// Driver is a database backend. Implementations must be safe for concurrent
// use.
type Driver interface {
	// Name is "postgres" or "sqlite".
	Name() string
	// Migrate applies every pending versioned migration. It is idempotent
	// and safe to call from several processes at once.
	Migrate(ctx context.Context) error
	// MigrationVersion returns the highest applied migration version.
	MigrationVersion(ctx context.Context) (int, error)
	// LatestMigration returns the highest migration version this binary
	// embeds: the schema it needs (a database below it must be migrated).
	LatestMigration() (int, error)
	// Begin starts a read-write transaction. For SQLite this takes the
	// write lock immediately (BEGIN IMMEDIATE) so that Tx.LockExecution
	// can be a no-op.
	Begin(ctx context.Context) (Tx, error)
	// Read runs fn against a read-only view without taking write locks.
	Read(ctx context.Context, fn func(q Querier) error) error
	Close() error
}

// ExecutionFilter narrows ExecutionList; its zero value matches every
// execution.
type ExecutionFilter struct {
	Status api.ExecStatus // the execution's status; "" for any
	// Path is the playbook path, exactly; or, with PathPrefix, the
	// paths that start with it (byte for byte, no wildcards). "" for any.
	Path       string
	PathPrefix bool
}

// Querier holds the read operations; both Tx and Driver.Read provide it.
type Querier interface {
	QueryQuerier
	PreAggQuerier
	AuthQuerier
	NotifyQuerier
	IdempotencyQuerier // slice idem (issue 15)

	CatalogGet(ctx context.Context, path string, version int) (CatalogEntry, error) // version 0 = latest
	CatalogGetByID(ctx context.Context, catalogID int64) (CatalogEntry, error)
	CatalogList(ctx context.Context) ([]CatalogEntry, error) // latest version per path, path order, without Content

	ExecutionGet(ctx context.Context, id int64) (Execution, error)
	// ExecutionList pages the executions f matches newest first (by
	// execution_id desc); it returns the page and the count of every
	// execution f matches.
	ExecutionList(ctx context.Context, f ExecutionFilter, offset, limit int) ([]Execution, int64, error)

	EventList(ctx context.Context, executionID int64) ([]Event, error) // by event_id asc
	// EventListOfType is EventList of one event type only.
	EventListOfType(ctx context.Context, executionID int64, eventType string) ([]Event, error)
	// EventsAfter returns up to limit events with event_id > afterID, by
	// event_id asc: of one execution, or of every execution when
	// executionID is 0; of the given types, or of every type when types is
	// empty. Live streams read with it (package live).
	EventsAfter(ctx context.Context, executionID, afterID int64, types []string, limit int) ([]Event, error)

	CommandGet(ctx context.Context, eventID int64) (Command, error)
	CommandListByExecution(ctx context.Context, executionID int64) ([]Command, error) // by event_id asc
	// CommandsDue returns up to limit non-terminal commands that need a new
	// notification: status issued with PublishedAt <= unclaimedBefore, or
	// status claimed/running with LeaseExpires <= now and either
	// PublishedAt < LeaseExpires (not re-notified since the lease expired)
	// or PublishedAt <= unclaimedBefore (re-notified long ago, still not
	// claimed); excluding commands whose notification is still pending (or
	// that still have an outbox row, written before migration 9) and
	// commands of executions that are not running. Ordered by event_id.
	CommandsDue(ctx context.Context, now, unclaimedBefore time.Time, limit int) ([]Command, error)

	// OutboxFetch returns rows whose AvailableAt <= now, by id asc.
	OutboxFetch(ctx context.Context, now time.Time, limit int) ([]OutboxMsg, error)
	Stats(ctx context.Context) (Stats, error)
	// OpsStats reads the operational picture at now (leases expired
	// before now, outbox rows and commands due by now).
	OpsStats(ctx context.Context, now time.Time) (OpsStats, error)
	// DBClock is the database's clock, read by a statement that does
	// nothing else, so a caller timing the call brackets it closely
	// (PostgreSQL's clock_timestamp(); SQLite has no clock of its own: the
	// process's). In UTC.
	DBClock(ctx context.Context) (time.Time, error)

	// ExecutionChildren lists executions whose ParentExecutionID is
	// parent, by execution_id asc.
	ExecutionChildren(ctx context.Context, parent int64) ([]Execution, error)
	// ExecutionChildOf is the child a command started (the task at index
	// task of its task list; 0 for a single tool), ErrNotFound when none
	// (issue 15, slice child).
	ExecutionChildOf(ctx context.Context, parentCommandID int64, task int) (Execution, error)

	LoopGet(ctx context.Context, loopID int64) (Loop, error)
	LoopListByExecution(ctx context.Context, executionID int64) ([]Loop, error) // by loop_id asc

	CredentialGet(ctx context.Context, name string) (Credential, error)
	CredentialList(ctx context.Context) ([]Credential, error) // by name, Data nil

	BlobGet(ctx context.Context, id int64) ([]byte, error)
}

// Tx is one read-write transaction.
type Tx interface {
	Querier
	QueryTx
	PreAggTx
	AuthTx
	SetTx
	ManyTx
	NotifyTx
	RetentionTx
	IdempotencyTx // slice idem (issue 15)

	// Commit and Rollback take a context with a deadline, as every other
	// statement does: a stalled database must not hold a caller (or a
	// shutdown) forever. Rollback is harmless after Commit or a previous
	// Rollback, so callers can always defer it; give it a context that is
	// still live even when the work's own context has ended.
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
	// Savepoint, RollbackTo and Release bracket one caller's work inside a
	// shared (group-committed) transaction. Names are [a-z0-9_]+.
	//
	// A driver may queue statements that return nothing (inserts,
	// SAVEPOINT) and send them with the transaction's next statement that
	// does, saving round trips. A queued statement's error is then
	// returned by that later call, wrapped as the statement's own, and
	// at the latest by Release, RollbackTo or Commit; the transaction is
	// then unusable until RollbackTo, as after any failed statement.
	Savepoint(ctx context.Context, name string) error
	RollbackTo(ctx context.Context, name string) error
	Release(ctx context.Context, name string) error

	// CatalogInsert stores content under path with version = previous max
	// version + 1 (1 for a new path) and returns the entry.
	CatalogInsert(ctx context.Context, catalogID int64, path, name, content string, now time.Time) (CatalogEntry, error)

	ExecutionInsert(ctx context.Context, e Execution) error
	// LockExecution serialises writers of one execution until commit
	// (SELECT ... FOR UPDATE on PostgreSQL), with its Revision. Returns
	// ErrNotFound if absent.
	LockExecution(ctx context.Context, id int64) (Execution, error)
	// ExecutionTouch sets the execution's Revision to revision, a value
	// never used before (a fresh id). Call it, holding LockExecution, in
	// every transaction that changes the execution's commands, loops or
	// context in a way the engine reads, so a cached copy of that state can
	// tell it is stale. A unique token rather than a counter: a transaction
	// that rolled back can never have announced a revision that a later one
	// reuses.
	ExecutionTouch(ctx context.Context, id, revision int64) error
	// ExecutionSetContext replaces the execution's Context.
	ExecutionSetContext(ctx context.Context, id int64, context json.RawMessage) error
	// ExecutionFinish moves a running execution to a terminal status.
	// Returns ErrConflict if it is not running.
	ExecutionFinish(ctx context.Context, id int64, status api.ExecStatus, result json.RawMessage, errMsg string, now time.Time) error

	EventInsert(ctx context.Context, e Event) error

	// CommandInsert inserts a command in status issued with Attempt 0,
	// Publishes 1, PublishedAt = AvailableAt (CreatedAt when zero) and its
	// notification pending, due at AvailableAt, with c.TraceParent (see
	// NotifyQuerier).
	CommandInsert(ctx context.Context, c Command) error
	// CommandClaim grants a lease. It succeeds when the command is issued,
	// or claimed/running with an expired lease (LeaseExpires <= Now); the
	// attempt becomes attempt+1, status claimed (running with p.Start),
	// worker and lease set.
	// It returns ErrConflict when a live lease is held or the command is
	// terminal, and ErrNotFound when there is no such command. Exactly one
	// of several concurrent claims succeeds.
	CommandClaim(ctx context.Context, p ClaimParams) (Command, error)
	// CommandStart moves claimed -> running for the holder of attempt, and
	// extends the lease. CommandHeartbeat only extends the lease. Both
	// return ErrConflict unless workerID holds attempt and the command is
	// claimed or running (an expired but not yet re-claimed lease is still
	// held). tokenID is the caller's token id: when the claim recorded a
	// non-zero ClaimTokenID and tokenID differs, the holder's
	// workerID/attempt get ErrNotYours and nothing changes.
	CommandStart(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (Command, error)
	CommandHeartbeat(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (Command, error)
	// CommandFinish records the terminal result for the holder of attempt.
	// ErrConflict when the caller does not hold it or it already ended;
	// ErrNotYours as for CommandStart (p.TokenID).
	CommandFinish(ctx context.Context, p FinishParams) (Command, error)
	// CommandCancelExecution marks every non-terminal command of the
	// execution cancelled, drops their pending notifications and returns
	// how many changed.
	CommandCancelExecution(ctx context.Context, executionID int64, now time.Time) (int, error)
	// CommandMarkRepublished increments Publishes, sets PublishedAt = now,
	// makes a notification pending, due now, with traceParent (the span
	// asking for it, "" for none) and returns the updated command.
	CommandMarkRepublished(ctx context.Context, eventID int64, now time.Time, traceParent string) (Command, error)

	// OutboxInsert stores msg; ID must be set by the caller.
	OutboxInsert(ctx context.Context, msg OutboxMsg) error
	OutboxDelete(ctx context.Context, ids []int64) error

	// LoopInsert stores a loop in status running.
	LoopInsert(ctx context.Context, l Loop) error
	// LoopFinish moves a running loop to done or failed with its result;
	// ErrConflict if it is not running (this is what makes loop.done fire
	// exactly once), ErrNotFound if absent.
	LoopFinish(ctx context.Context, loopID int64, status api.LoopStatus, result json.RawMessage, now time.Time) error

	// CredentialPut inserts or replaces a credential by name, keeping the
	// original CreatedAt on replace.
	CredentialPut(ctx context.Context, c Credential) error
	// CredentialDelete removes a credential; ErrNotFound if absent.
	CredentialDelete(ctx context.Context, name string) error

	// BlobPut stores a large result by id (results over the inline limit
	// are stored by reference).
	BlobPut(ctx context.Context, id int64, data []byte, now time.Time) error

	// CommandHold marks an issued command running, held by holder until
	// until, with no notification pending: the server runs it itself (a
	// `playbook` step waits on its child; issue 15, slice child). Like a
	// claim it bumps the attempt; ErrConflict unless the command is issued.
	CommandHold(ctx context.Context, eventID int64, holder string, until, now time.Time) (Command, error)
}
