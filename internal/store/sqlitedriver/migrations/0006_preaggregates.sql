-- Issue 11: the metrics layer (semantic models), pre-aggregate builds and
-- their refresh bookkeeping, and the metric-query columns of the query
-- history. Times are INTEGER unix microseconds; JSON documents are TEXT,
-- byte for byte, like queries.columns.

-- A metric query keeps its request and where it was routed. The defaults
-- leave every existing (SQL) query exactly as it was.
ALTER TABLE queries ADD COLUMN kind          TEXT NOT NULL DEFAULT '';
ALTER TABLE queries ADD COLUMN metric_query  TEXT;
ALTER TABLE queries ADD COLUMN target        TEXT NOT NULL DEFAULT '';
ALTER TABLE queries ADD COLUMN pre_aggregate TEXT;
ALTER TABLE queries ADD COLUMN build_uuid    TEXT NOT NULL DEFAULT '';

CREATE TABLE semantic_models (
    project_id INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    definition TEXT,
    hash       TEXT    NOT NULL DEFAULT '',
    source     TEXT    NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, name)
);

-- trigger_reason, row_count and byte_count keep clear of SQL keywords.
CREATE TABLE preagg_builds (
    build_uuid     TEXT    PRIMARY KEY,
    project_id     INTEGER NOT NULL,
    model          TEXT    NOT NULL,
    pre_aggregate  TEXT    NOT NULL,
    def_hash       TEXT    NOT NULL DEFAULT '',
    status         TEXT    NOT NULL,
    trigger_reason TEXT    NOT NULL DEFAULT '',
    partitions     TEXT,
    rebuild        TEXT,
    row_count      INTEGER NOT NULL DEFAULT 0,
    byte_count     INTEGER NOT NULL DEFAULT 0,
    key_value      TEXT    NOT NULL DEFAULT '',
    data_as_of     INTEGER,
    error          TEXT    NOT NULL DEFAULT '',
    worker_id      TEXT    NOT NULL DEFAULT '',
    publishes      INTEGER NOT NULL DEFAULT 0,
    published_at   INTEGER,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    ended_at       INTEGER,
    updated_at     INTEGER NOT NULL
);

-- At most one active build per pre-aggregate: the database, not only
-- BuildPromote, guarantees it. It also serves BuildsActive (project_id
-- leads; queries repeat the exact WHERE term for SQLite to use it).
CREATE UNIQUE INDEX preagg_builds_one_active_idx ON preagg_builds (project_id, model, pre_aggregate)
    WHERE status = 'active';

-- BuildList: a project's builds newest first, all or of one pre-aggregate.
CREATE INDEX preagg_builds_history_idx ON preagg_builds (project_id, created_at DESC, build_uuid DESC);
CREATE INDEX preagg_builds_preagg_history_idx ON preagg_builds (project_id, model, pre_aggregate, created_at DESC, build_uuid DESC);

-- BuildsQueuedBefore / BuildsBuildingBefore: the few rows in flight by last
-- notification (heartbeat); BuildPending uses the history index above.
CREATE INDEX preagg_builds_queued_idx ON preagg_builds (published_at) WHERE status = 'queued';
CREATE INDEX preagg_builds_building_idx ON preagg_builds (published_at) WHERE status = 'building';

-- Refresh bookkeeping, written with compare-and-set on version.
CREATE TABLE preagg_state (
    project_id     INTEGER NOT NULL,
    model          TEXT    NOT NULL,
    pre_aggregate  TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    next_cron_at   INTEGER,
    key_value      TEXT    NOT NULL DEFAULT '',
    key_checked_at INTEGER,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (project_id, model, pre_aggregate)
);
