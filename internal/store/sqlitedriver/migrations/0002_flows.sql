-- Playbook language: retries with backoff, loops, sub-playbooks, credentials
-- and large results stored by reference. Times are INTEGER unix
-- microseconds; JSON documents are TEXT.

-- available_at is when a command may first be notified (a retry's backoff).
-- SQLite can only add a NOT NULL column with a default; the 0 is never used
-- (CommandInsert always sets the column) and existing rows are back-filled:
-- they were available the moment they were created.
ALTER TABLE commands ADD COLUMN available_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN loop_id      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN loop_index   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN retry        INTEGER NOT NULL DEFAULT 0;
UPDATE commands SET available_at = created_at;

ALTER TABLE executions ADD COLUMN parent_execution_id INTEGER NOT NULL DEFAULT 0;

-- ExecutionChildren: one parent's executions in execution_id order.
CREATE INDEX executions_parent_idx ON executions (parent_execution_id, execution_id);

-- Same trick as commands.available_at: the default is never used.
ALTER TABLE outbox ADD COLUMN available_at INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET available_at = created_at;

-- OutboxFetch filters on available_at; while a backlog of deferred retries
-- waits, the publisher finds the few ready rows without walking them all.
CREATE INDEX outbox_available_idx ON outbox (available_at, id);

CREATE TABLE loops (
    loop_id       INTEGER PRIMARY KEY,
    execution_id  INTEGER NOT NULL,
    step          TEXT    NOT NULL,
    total         INTEGER NOT NULL,
    mode          TEXT    NOT NULL,
    max_in_flight INTEGER NOT NULL,
    items         TEXT,
    status        TEXT    NOT NULL,
    result        TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX loops_execution_idx ON loops (execution_id, loop_id);

-- data is sealed by the caller; the store never sees plaintext.
CREATE TABLE credentials (
    name        TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    data        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    data       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
