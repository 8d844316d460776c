-- Issue 11: the metrics layer (semantic models), pre-aggregate builds and
-- their refresh bookkeeping, and the metric-query columns of the query
-- history. JSON documents are json, not jsonb, so they round-trip byte for
-- byte like queries.columns.

-- A metric query keeps its request and where it was routed. The defaults
-- leave every existing (SQL) query exactly as it was.
ALTER TABLE queries
    ADD COLUMN kind          text NOT NULL DEFAULT '',
    ADD COLUMN metric_query  json,
    ADD COLUMN target        text NOT NULL DEFAULT '',
    ADD COLUMN pre_aggregate json,
    ADD COLUMN build_uuid    text NOT NULL DEFAULT '';

CREATE TABLE semantic_models (
    project_id bigint      NOT NULL,
    name       text        NOT NULL,
    definition json,
    hash       text        NOT NULL DEFAULT '',
    source     text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, name)
);

-- trigger_reason, row_count and byte_count keep clear of SQL keywords.
CREATE TABLE preagg_builds (
    build_uuid     text        PRIMARY KEY,
    project_id     bigint      NOT NULL,
    model          text        NOT NULL,
    pre_aggregate  text        NOT NULL,
    def_hash       text        NOT NULL DEFAULT '',
    status         text        NOT NULL,
    trigger_reason text        NOT NULL DEFAULT '',
    partitions     json,
    rebuild        json,
    row_count      bigint      NOT NULL DEFAULT 0,
    byte_count     bigint      NOT NULL DEFAULT 0,
    key_value      text        NOT NULL DEFAULT '',
    data_as_of     timestamptz,
    error          text        NOT NULL DEFAULT '',
    worker_id      text        NOT NULL DEFAULT '',
    publishes      integer     NOT NULL DEFAULT 0,
    published_at   timestamptz,
    created_at     timestamptz NOT NULL,
    started_at     timestamptz,
    ended_at       timestamptz,
    updated_at     timestamptz NOT NULL
);

-- At most one active build per pre-aggregate: the database, not only
-- BuildPromote, guarantees it. It also serves BuildsActive (project_id
-- leads).
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
    project_id     bigint      NOT NULL,
    model          text        NOT NULL,
    pre_aggregate  text        NOT NULL,
    version        bigint      NOT NULL,
    next_cron_at   timestamptz,
    key_value      text        NOT NULL DEFAULT '',
    key_checked_at timestamptz,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (project_id, model, pre_aggregate)
);
