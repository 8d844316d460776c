-- Issue 14: retention (MILLRACE_RETENTION) finds executions that ended
-- before its cutoff, oldest first, and deletes them in bounded batches.
CREATE INDEX executions_ended_idx ON executions (ended_at) WHERE ended_at IS NOT NULL;
