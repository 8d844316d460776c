package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/millrace/millrace/internal/bus"
)

// A Kind is one stream's kind of work: where its messages come from and
// what a message means. The runtime does everything else.
type Kind interface {
	// Name labels logs and metrics ("commands", "warehouse").
	Name() string
	// Lanes are the durable consumers to pull from. Every lane shares the
	// runtime's slots; a lane leaves Reserve of them free for the others.
	Lanes(concurrency int) []Lane
	// Ensure creates the kind's stream and consumers when they are
	// missing. The runtime calls it at start and whenever a lane's
	// consumer cannot be found (NATS restarted, an operator deleted it).
	Ensure(ctx context.Context, conn *bus.Conn) error
	// Decode parses a message. An error makes the message poison: it is
	// terminated at once, never redelivered.
	Decode(data []byte) (Job, error)
	// Close releases what the kind holds; the runtime calls it once every
	// job has ended.
	Close()
}

// A Lane is one durable consumer of a kind's stream.
type Lane struct {
	Stream, Consumer string
	// Reserve is how many of the runtime's slots this lane leaves free, so
	// that a backlog here never delays the lanes that reserve nothing.
	Reserve int
	// Max caps how many of this lane's jobs run at once (0: no cap
	// beyond the runtime's slots), e.g. builds that each hold a DuckDB.
	Max int
}

// A Job is the work one message points at. The runtime calls Claim; if
// that succeeds, Run, while it keeps the message from redelivery and calls
// Heartbeat; then Report with Run's error. If the shutdown grace runs out
// while Run fails, it calls Release instead of Report.
type Job interface {
	// Attr names the job in logs, e.g. command_id=42.
	Attr() slog.Attr
	// Claim takes the job's lease from the server. An error wrapping
	// ErrGone (claimed elsewhere, cancelled or ended) acknowledges the
	// message; ErrUnknown (the server does not know the job) terminates
	// it; any other error redelivers it after a backoff.
	Claim(ctx context.Context) error
	// Lease is how long the server keeps the claim without a heartbeat.
	// The runtime beats three times per lease (or per ack wait, if that
	// is shorter); zero means DefaultLease.
	Lease() time.Duration
	// Heartbeat renews the claim. ErrLost (cancelled, re-claimed, ended)
	// stops the job: Run's context is cancelled and the message
	// acknowledged.
	Heartbeat(ctx context.Context) error
	// Run does the work. Its context ends when the lease is lost or the
	// shutdown grace runs out.
	Run(ctx context.Context) error
	// Report tells the server how Run ended, retrying as the kind sees fit
	// until ctx ends, and returns the outcome for the metrics
	// ("completed", "failed"). ErrLost means another result stands (the
	// message is acknowledged); any other error redelivers the message.
	Report(ctx context.Context, runErr error) (outcome string, err error)
	// Release gives the claim back, so that another worker takes the job
	// at once rather than after the lease expires.
	Release(ctx context.Context) error
}

// The errors a Job returns to tell the runtime what a refusal means; wrap
// the server's error in them (fmt.Errorf("%w: %w", worker.ErrGone, err)).
var (
	ErrGone    = errors.New("the job was claimed elsewhere or has ended")
	ErrUnknown = errors.New("the server does not know the job")
	ErrLost    = errors.New("the claim is no longer ours")
)
