-- The warehouse-query face: projects (named warehouse connections) and the
-- query history. columns is json, not jsonb, so the document round-trips
-- byte for byte; ids and query uuids are supplied by the application.

-- warehouse is sealed by the caller; the store never sees plaintext.
CREATE TABLE projects (
    project_id     bigint      PRIMARY KEY,
    name           text        NOT NULL UNIQUE,
    warehouse_type text        NOT NULL,
    warehouse      bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE TABLE queries (
    query_uuid   text        PRIMARY KEY,
    project_id   bigint      NOT NULL,
    sql          text        NOT NULL,
    lane         text        NOT NULL DEFAULT '',
    cache_key    text        NOT NULL DEFAULT '',
    cache_hit    boolean     NOT NULL DEFAULT false,
    status       text        NOT NULL,
    error        text        NOT NULL DEFAULT '',
    columns      json,
    total_rows   bigint      NOT NULL DEFAULT 0,
    result_key   text        NOT NULL DEFAULT '',
    worker_id    text        NOT NULL DEFAULT '',
    publishes    integer     NOT NULL DEFAULT 0,
    published_at timestamptz,
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    ended_at     timestamptz,
    expires_at   timestamptz,
    updated_at   timestamptz NOT NULL
);

-- QueryList: one project's history, newest first.
CREATE INDEX queries_history_idx ON queries (project_id, created_at DESC, query_uuid DESC);

-- QueryCached: only ready rows can serve the cache, so the rest stay out.
CREATE INDEX queries_cache_idx ON queries (project_id, cache_key, created_at DESC)
    WHERE status = 'ready';

-- QueriesQueuedBefore and QueueStats: the few queued rows by last notification.
CREATE INDEX queries_queued_idx ON queries (published_at) WHERE status = 'queued';

-- QueriesCreatedBefore (queue-timeout expiry) and the executing count.
CREATE INDEX queries_status_created_idx ON queries (status, created_at);
