-- Issue 12: API tokens and login sessions, one table. Only a SHA-256 of
-- each secret is kept (tokens are 256-bit random, so a plain hash is not
-- guessable); the secret is shown once, when it is made.
CREATE TABLE auth_tokens (
    id            bigint      PRIMARY KEY,
    kind          text        NOT NULL,          -- api | session
    name          text        NOT NULL DEFAULT '',
    role          text        NOT NULL,          -- admin | operator | viewer | worker
    subject       text        NOT NULL DEFAULT '', -- a session's user (OIDC sub, or the API token it came from)
    email         text        NOT NULL DEFAULT '',
    hash          text        NOT NULL UNIQUE,   -- hex SHA-256 of the secret
    created_by    text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX auth_tokens_kind ON auth_tokens (kind, id);

-- A claim records the worker token that made it; only that token may
-- heartbeat, report or release the claim (0: made with auth off).
ALTER TABLE commands      ADD COLUMN claim_token_id bigint NOT NULL DEFAULT 0;
ALTER TABLE queries       ADD COLUMN claim_token_id bigint NOT NULL DEFAULT 0;
ALTER TABLE preagg_builds ADD COLUMN claim_token_id bigint NOT NULL DEFAULT 0;
