package api

import "time"

// ExecLiveStatuses are the non-terminal execution statuses: the monitor
// exports a count for each (terminal ones are counters).
var ExecLiveStatuses = []ExecStatus{ExecRunning}

// OpsReport is the reply of GET /api/ops: one server's operational
// picture, sampled at most once a second (`millrace doctor` prints it).
// Ages are in seconds, 0 when nothing waits.
type OpsReport struct {
	// At is the server's clock when the sample was taken.
	At time.Time `json:"at"`
	// DatabaseTime is the database's clock, read by a round trip of its
	// own right after the store's figures (nil when the store could not be
	// read); ClockSkewSeconds is this server's clock at the midpoint of
	// that round trip minus it.
	DatabaseTime     *time.Time `json:"database_time,omitempty"`
	ClockSkewSeconds float64    `json:"clock_skew_seconds"`
	// Store is "ok" or why the store could not be read.
	Store    string      `json:"store"`
	Outbox   OpsOutbox   `json:"outbox"`
	Commands OpsCommands `json:"commands"`
	// Executions counts executions by non-terminal status.
	Executions map[string]int64 `json:"executions"`
	// QueriesQueued counts queued queries by lane (interactive,
	// background, pre-aggregate).
	QueriesQueued map[string]int64 `json:"queries_queued"`
	NATS          OpsNATS          `json:"nats"`
	// Workers are the pools seen through presence beats, by kind and pool.
	Workers  []OpsWorkers `json:"workers"`
	Problems []OpsProblem `json:"problems"`
}

// OpsOutbox is the outbox: notifications not yet acknowledged by NATS.
type OpsOutbox struct {
	Depth            int64   `json:"depth"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// OpsCommands are commands waiting for a worker.
type OpsCommands struct {
	Unclaimed                 int64   `json:"unclaimed"`
	UnclaimedOldestAgeSeconds float64 `json:"unclaimed_oldest_age_seconds"`
	// ExpiredLeases are claimed or running commands whose worker stopped
	// renewing the lease; the reaper re-notifies them.
	ExpiredLeases                int64   `json:"expired_leases"`
	ExpiredLeaseOldestAgeSeconds float64 `json:"expired_lease_oldest_age_seconds"`
}

// OpsNATS is the server's NATS link and the streams it uses.
type OpsNATS struct {
	Connected bool   `json:"connected"`
	URL       string `json:"url"` // without credentials
	// Replicas is NATS_REPLICAS, what the server creates streams with.
	Replicas int         `json:"replicas"`
	Streams  []OpsStream `json:"streams"`
}

// OpsStream is one JetStream stream the server uses.
type OpsStream struct {
	Name string `json:"name"`
	// Kind is the worker kind that consumes it: commands, warehouse or
	// pre-aggregate.
	Kind      string        `json:"kind"`
	Subjects  []string      `json:"subjects"`
	Storage   string        `json:"storage"`
	Replicas  int           `json:"replicas"`
	Leader    string        `json:"leader,omitempty"`
	Messages  uint64        `json:"messages"`
	Bytes     uint64        `json:"bytes"`
	Consumers []OpsConsumer `json:"consumers"`
	Error     string        `json:"error,omitempty"`
}

// OpsConsumer is one durable consumer: a worker pool or lane.
type OpsConsumer struct {
	Name string `json:"name"`
	// Pool is the worker pool that takes its messages: "" for the
	// commands stream's default durable and the query lanes.
	Pool string `json:"pool"`
	// Lag is Unprocessed + AckPending (what KEDA scales on).
	Lag           uint64     `json:"lag"`
	Unprocessed   uint64     `json:"unprocessed"`
	AckPending    int        `json:"ack_pending"`
	MaxAckPending int        `json:"max_ack_pending"`
	Redelivered   int        `json:"redelivered"`
	Waiting       int        `json:"waiting_pulls"`
	AckWait       string     `json:"ack_wait"`
	MaxDeliver    int        `json:"max_deliver"`
	Delivered     uint64     `json:"delivered"` // the consumer sequence
	LastActive    *time.Time `json:"last_active,omitempty"`
}

// OpsWorkers is one (kind, pool) of workers alive by their presence beats.
type OpsWorkers struct {
	Kind   string `json:"kind"`
	Pool   string `json:"pool"`
	Online int    `json:"online"`
	Slots  int    `json:"slots"`
	Busy   int    `json:"busy"`
}

// Problem severities: an error makes `millrace doctor` exit non-zero.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
)

// OpsProblem is something an operator should act on, with what to do.
type OpsProblem struct {
	Code     string `json:"code"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	Hint     string `json:"hint"`
}

// Problem codes of OpsReport.Problems.
const (
	ProblemNATSDisconnected  = "nats_disconnected"
	ProblemOutboxStuck       = "outbox_stuck"
	ProblemCommandsUnclaimed = "commands_unclaimed"
	ProblemExpiredLeases     = "expired_leases"
	ProblemConsumerLag       = "consumer_lag"
	ProblemNoWorkers         = "no_workers"
	ProblemClockSkew         = "clock_skew"
	ProblemStreamReplicas    = "stream_replicas"
	ProblemStore             = "store"
)
