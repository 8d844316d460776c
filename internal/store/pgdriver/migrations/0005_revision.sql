-- A token (a fresh id) set by every transaction that changes what the engine
-- derives from an execution's rows (commands, loops, context): a server's
-- in-memory copy of that state is valid while the token still matches.
ALTER TABLE executions ADD COLUMN revision bigint NOT NULL DEFAULT 0;
