-- Issue 13: deploy and operate.
-- A command may be routed to a worker pool (a step's `pool:`): its
-- notifications go to NATS_SUBJECT.<pool>, first publish and re-notify alike.
ALTER TABLE commands ADD COLUMN pool text NOT NULL DEFAULT '';
-- The W3C traceparent of the span that wrote an outbox row, so the trace
-- continues through the relay into the NATS message's headers.
ALTER TABLE outbox ADD COLUMN trace_parent text NOT NULL DEFAULT '';
