-- Issue 14: a command's pending notification is a state of its row, not an
-- outbox row. notify_at is when the next notification is due (NULL: nothing
-- to publish); the relay publishes due rows and clears notify_at in one
-- UPDATE per batch. trace_parent continues the trace of the request that
-- asked for the notification. The partial index holds only pending rows, so
-- it stays as small as the backlog whatever the history.
-- Outbox rows written before this migration are still drained by the relay,
-- and CommandsDue still skips commands that have one: an upgrade loses
-- nothing. Adding a NULL column and one with a constant default rewrites
-- no rows.
ALTER TABLE commands ADD COLUMN notify_at timestamptz;
ALTER TABLE commands ADD COLUMN trace_parent text NOT NULL DEFAULT '';
CREATE INDEX commands_notify_idx ON commands (notify_at, event_id) WHERE notify_at IS NOT NULL;
