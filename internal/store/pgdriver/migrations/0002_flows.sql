-- Playbook language: retries with backoff, loops, sub-playbooks, credentials
-- and large results stored by reference. New JSON columns are json (not
-- jsonb) so documents round-trip byte for byte.

-- available_at is when a command may first be notified (a retry's backoff).
-- Added nullable, back-filled, then made NOT NULL: existing rows were
-- available the moment they were created.
ALTER TABLE commands
    ADD COLUMN available_at timestamptz,
    ADD COLUMN loop_id      bigint  NOT NULL DEFAULT 0,
    ADD COLUMN loop_index   integer NOT NULL DEFAULT 0,
    ADD COLUMN retry        integer NOT NULL DEFAULT 0;
UPDATE commands SET available_at = created_at;
ALTER TABLE commands ALTER COLUMN available_at SET NOT NULL;

ALTER TABLE executions ADD COLUMN parent_execution_id bigint NOT NULL DEFAULT 0;

-- ExecutionChildren: one parent's executions in execution_id order.
CREATE INDEX executions_parent_idx ON executions (parent_execution_id, execution_id);

ALTER TABLE outbox ADD COLUMN available_at timestamptz;
UPDATE outbox SET available_at = created_at;
ALTER TABLE outbox ALTER COLUMN available_at SET NOT NULL;

-- OutboxFetch filters on available_at; while a backlog of deferred retries
-- waits, the publisher finds the few ready rows without walking them all.
CREATE INDEX outbox_available_idx ON outbox (available_at, id);

CREATE TABLE loops (
    loop_id       bigint      PRIMARY KEY,
    execution_id  bigint      NOT NULL,
    step          text        NOT NULL,
    total         integer     NOT NULL,
    mode          text        NOT NULL,
    max_in_flight integer     NOT NULL,
    items         json,
    status        text        NOT NULL,
    result        json,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX loops_execution_idx ON loops (execution_id, loop_id);

-- data is sealed by the caller; the store never sees plaintext.
CREATE TABLE credentials (
    name        text        PRIMARY KEY,
    kind        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    data        bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE blobs (
    id         bigint      PRIMARY KEY,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL
);
