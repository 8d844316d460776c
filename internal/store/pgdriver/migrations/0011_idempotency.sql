-- Issue 15: idempotent submission. A submit with an Idempotency-Key
-- records the key in the transaction that creates its execution or query;
-- the primary key decides between concurrent submits of one key, and a
-- retry reads the first one's answer back. Rows older than
-- MILLRACE_IDEMPOTENCY_SECONDS are replaced by a new submit of their key
-- and deleted by the server's purge (idempotency_keys_created_idx).
CREATE TABLE idempotency_keys (
    scope         text        NOT NULL,  -- execution | query
    key           text        NOT NULL,  -- the client's Idempotency-Key
    request_hash  text        NOT NULL,  -- hex SHA-256 of what was asked (route, path, version, payload)
    result_id     text        NOT NULL,  -- the execution id or query uuid made
    answer        text        NOT NULL,  -- the first answer's JSON body, sent again on a replay
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
