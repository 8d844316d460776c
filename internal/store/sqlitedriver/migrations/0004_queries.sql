-- The warehouse-query face: projects (named warehouse connections) and the
-- query history. Times are INTEGER unix microseconds; columns is a JSON
-- document stored as TEXT byte for byte; cache_hit is 0 or 1. Ids and query
-- uuids are supplied by the application.

-- warehouse is sealed by the caller; the store never sees plaintext.
CREATE TABLE projects (
    project_id     INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    warehouse_type TEXT    NOT NULL,
    warehouse      BLOB    NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE queries (
    query_uuid   TEXT    PRIMARY KEY,
    project_id   INTEGER NOT NULL,
    sql          TEXT    NOT NULL,
    lane         TEXT    NOT NULL DEFAULT '',
    cache_key    TEXT    NOT NULL DEFAULT '',
    cache_hit    INTEGER NOT NULL DEFAULT 0,
    status       TEXT    NOT NULL,
    error        TEXT    NOT NULL DEFAULT '',
    columns      TEXT,
    total_rows   INTEGER NOT NULL DEFAULT 0,
    result_key   TEXT    NOT NULL DEFAULT '',
    worker_id    TEXT    NOT NULL DEFAULT '',
    publishes    INTEGER NOT NULL DEFAULT 0,
    published_at INTEGER,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    ended_at     INTEGER,
    expires_at   INTEGER,
    updated_at   INTEGER NOT NULL
);

-- QueryList: one project's history, newest first.
CREATE INDEX queries_history_idx ON queries (project_id, created_at DESC, query_uuid DESC);

-- QueryCached: only ready rows can serve the cache, so the rest stay out.
-- Queries must repeat the exact WHERE term for SQLite to use a partial index.
CREATE INDEX queries_cache_idx ON queries (project_id, cache_key, created_at DESC)
    WHERE status = 'ready';

-- QueriesQueuedBefore and QueueStats: the few queued rows by last notification.
CREATE INDEX queries_queued_idx ON queries (published_at) WHERE status = 'queued';

-- QueriesCreatedBefore (queue-timeout expiry) and the executing count.
CREATE INDEX queries_status_created_idx ON queries (status, created_at);
