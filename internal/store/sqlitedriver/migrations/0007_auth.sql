-- Issue 12: API tokens and login sessions, one table. Only a SHA-256 of
-- each secret is kept (tokens are 256-bit random, so a plain hash is not
-- guessable); the secret is shown once, when it is made. Times are INTEGER
-- unix microseconds.
CREATE TABLE auth_tokens (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL,
    name          TEXT    NOT NULL DEFAULT '',
    role          TEXT    NOT NULL,
    subject       TEXT    NOT NULL DEFAULT '',
    email         TEXT    NOT NULL DEFAULT '',
    hash          TEXT    NOT NULL UNIQUE,
    created_by    TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX auth_tokens_kind ON auth_tokens (kind, id);

-- A claim records the worker token that made it; only that token may
-- heartbeat, report or release the claim (0: made with auth off).
ALTER TABLE commands      ADD COLUMN claim_token_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queries       ADD COLUMN claim_token_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE preagg_builds ADD COLUMN claim_token_id INTEGER NOT NULL DEFAULT 0;
