package store

import (
	"context"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// A command's pending notification is a state of its row (issue 14), not an
// outbox row: CommandInsert sets it due at AvailableAt, CommandMarkRepublished
// sets it due at once, and the relay clears it with CommandNotified once
// JetStream acknowledged the message. Publishing is one UPDATE per relay
// batch instead of an INSERT per command plus a DELETE per batch; nothing is
// inserted and deleted again. Other notifications (builds, queries) still
// use the outbox table.

// Notice is a command whose notification is due. It carries what the relay
// needs to build the message: the subject comes from Pool
// (bus.PoolSubject) and the Nats-Msg-Id from CommandID and Publishes
// (bus.NotifyMsgID), so every relay that publishes the same pending state
// sends the same id and JetStream's duplicate window drops the copies.
type Notice struct {
	EventID     int64
	ExecutionID int64
	CommandID   string
	Step        string
	Pool        string
	Status      api.CommandStatus
	// Publishes identifies the pending notification: CommandNotified
	// clears it only while Publishes is unchanged.
	Publishes int
	NotifyAt  time.Time
	// TraceParent is the W3C traceparent of the span that asked for the
	// notification ("" when tracing is off).
	TraceParent string
}

// Notified names a notification JetStream acknowledged.
type Notified struct {
	EventID   int64
	Publishes int
}

// NotifyQuerier reads pending command notifications.
type NotifyQuerier interface {
	// CommandsToNotify returns up to limit commands whose notification is
	// due (due at or before now), oldest due first, then by event_id. It
	// includes commands that ended meanwhile (Status terminal): the caller
	// clears those without publishing.
	CommandsToNotify(ctx context.Context, now time.Time, limit int) ([]Notice, error)
}

// NotifyTx writes pending command notifications.
type NotifyTx interface {
	// CommandNotified clears the pending notification of every command in
	// marks whose Publishes still equals the mark's, in one statement, and
	// returns how many it cleared. A command re-notified meanwhile
	// (CommandMarkRepublished bumped Publishes) keeps its new pending
	// notification. Unknown commands are ignored. On PostgreSQL, rows
	// another transaction holds locked are skipped rather than waited for
	// (they stay pending and are published again under the same
	// Nats-Msg-Id), so the relay never queues behind claims.
	CommandNotified(ctx context.Context, marks []Notified) (int, error)
}
