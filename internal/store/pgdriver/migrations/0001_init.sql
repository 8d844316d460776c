-- Initial schema. JSON columns use json (not jsonb) so documents round-trip
-- byte for byte; ids are supplied by the application, never generated here.

CREATE TABLE catalog (
    catalog_id bigint      PRIMARY KEY,
    path       text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    content    text        NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (path, version)
);

CREATE TABLE executions (
    execution_id bigint      PRIMARY KEY,
    catalog_id   bigint      NOT NULL,
    path         text        NOT NULL,
    version      integer     NOT NULL,
    status       text        NOT NULL,
    workload     json,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    result       json,
    error        text        NOT NULL DEFAULT ''
);

-- Stats and CommandsDue only ever look for running executions.
CREATE INDEX executions_running_idx ON executions (execution_id) WHERE status = 'running';

CREATE TABLE events (
    event_id     bigint      PRIMARY KEY,
    execution_id bigint      NOT NULL,
    event_type   text        NOT NULL,
    step         text        NOT NULL DEFAULT '',
    command_id   text        NOT NULL DEFAULT '',
    status       text        NOT NULL DEFAULT '',
    result       json,
    error        text        NOT NULL DEFAULT '',
    worker_id    text        NOT NULL DEFAULT '',
    attempt      integer     NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL
);

CREATE INDEX events_execution_idx ON events (execution_id, event_id);

CREATE TABLE commands (
    event_id         bigint      PRIMARY KEY,
    execution_id     bigint      NOT NULL,
    command_id       text        NOT NULL,
    step             text        NOT NULL,
    tool             json,
    input            json,
    status           text        NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    worker_id        text        NOT NULL DEFAULT '',
    lease_expires_at timestamptz,
    result           json,
    error            text        NOT NULL DEFAULT '',
    publishes        integer     NOT NULL DEFAULT 1,
    published_at     timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE INDEX commands_execution_idx ON commands (execution_id, event_id);

-- CommandsDue scans only live commands in event_id order; terminal commands,
-- the vast majority over time, stay out of this index.
CREATE INDEX commands_live_idx ON commands (event_id)
    WHERE status IN ('issued', 'claimed', 'running');

CREATE TABLE outbox (
    id         bigint      PRIMARY KEY,
    event_id   bigint      NOT NULL,
    subject    text        NOT NULL,
    msg_id     text        NOT NULL,
    payload    bytea,
    created_at timestamptz NOT NULL
);

CREATE INDEX outbox_event_idx ON outbox (event_id);
