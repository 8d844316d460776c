-- Initial schema. Times are INTEGER unix microseconds (UTC); JSON documents
-- are TEXT so they round-trip byte for byte; ids are supplied by the
-- application, so every INTEGER PRIMARY KEY is just the caller's id.

CREATE TABLE catalog (
    catalog_id INTEGER PRIMARY KEY,
    path       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (path, version)
);

CREATE TABLE executions (
    execution_id INTEGER PRIMARY KEY,
    catalog_id   INTEGER NOT NULL,
    path         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    workload     TEXT,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    result       TEXT,
    error        TEXT    NOT NULL DEFAULT ''
);

-- Stats and CommandsDue only ever look for running executions.
CREATE INDEX executions_running_idx ON executions (execution_id) WHERE status = 'running';

CREATE TABLE events (
    event_id     INTEGER PRIMARY KEY,
    execution_id INTEGER NOT NULL,
    event_type   TEXT    NOT NULL,
    step         TEXT    NOT NULL DEFAULT '',
    command_id   TEXT    NOT NULL DEFAULT '',
    status       TEXT    NOT NULL DEFAULT '',
    result       TEXT,
    error        TEXT    NOT NULL DEFAULT '',
    worker_id    TEXT    NOT NULL DEFAULT '',
    attempt      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);

CREATE INDEX events_execution_idx ON events (execution_id, event_id);

CREATE TABLE commands (
    event_id         INTEGER PRIMARY KEY,
    execution_id     INTEGER NOT NULL,
    command_id       TEXT    NOT NULL,
    step             TEXT    NOT NULL,
    tool             TEXT,
    input            TEXT,
    status           TEXT    NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT    NOT NULL DEFAULT '',
    lease_expires_at INTEGER,
    result           TEXT,
    error            TEXT    NOT NULL DEFAULT '',
    publishes        INTEGER NOT NULL DEFAULT 1,
    published_at     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE INDEX commands_execution_idx ON commands (execution_id, event_id);

-- CommandsDue and Stats scan only live commands in event_id order; terminal
-- commands, the vast majority over time, stay out of this index. Queries
-- must repeat this exact WHERE term for SQLite to use it.
CREATE INDEX commands_live_idx ON commands (event_id)
    WHERE status IN ('issued', 'claimed', 'running');

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    event_id   INTEGER NOT NULL,
    subject    TEXT    NOT NULL,
    msg_id     TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX outbox_event_idx ON outbox (event_id);
