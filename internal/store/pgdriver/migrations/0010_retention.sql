-- Issue 14: retention (MILLRACE_RETENTION). The event table becomes
-- partitioned by RANGE (event_id). Event ids are time-ordered (package ids:
-- milliseconds since 2025-01-01 shifted left 22 bits), so one UTC day is
-- one id range, and retention drops a day's partition whole instead of
-- deleting its rows one by one.
--
-- The existing table is not copied: it is renamed and attached as the
-- partition of every id below the migration's moment (events_legacy). That
-- rewrites nothing and rebuilds no index (its primary key and execution
-- index are adopted as the partitioned indexes' partitions); ATTACH reads
-- the table once to check the bound, under the migration's lock. Copying
-- would write every row and both indexes again.
--
-- A DEFAULT partition takes every id no day partition covers, so an insert
-- never fails for want of a partition. The retention service creates day
-- partitions ahead (only when MILLRACE_RETENTION is set; with retention off
-- new events land in events_default, one table as before).

ALTER TABLE events RENAME TO events_legacy;
ALTER INDEX events_pkey RENAME TO events_legacy_pkey;
ALTER INDEX events_execution_idx RENAME TO events_legacy_execution_idx;

-- LIKE keeps the column order, so a partition's SELECT * is the parent's.
CREATE TABLE events (LIKE events_legacy INCLUDING DEFAULTS) PARTITION BY RANGE (event_id);
ALTER TABLE events ADD PRIMARY KEY (event_id);
CREATE INDEX events_execution_idx ON events (execution_id, event_id);

CREATE TABLE events_default PARTITION OF events DEFAULT;

-- The legacy bound: above every stored id and at least the id of now, so
-- what a server still running the old binary writes meanwhile fits too.
-- A database without events (a new install) keeps no legacy partition.
DO $$
DECLARE
    bound bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM events_legacy) THEN
        DROP TABLE events_legacy;
        RETURN;
    END IF;
    SELECT GREATEST(
        COALESCE(MAX(event_id) + 1, 0),
        (floor(extract(epoch FROM (clock_timestamp() - timestamptz '2025-01-01 00:00:00+00')) * 1000)::bigint) << 22)
      INTO bound FROM events_legacy;
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO (%s)', bound);
END $$;

-- Retention finds executions that ended before its cutoff, oldest first.
CREATE INDEX executions_ended_idx ON executions (ended_at) WHERE ended_at IS NOT NULL;
