package store

// RetentionTx removes finished executions older than the retention period
// (MILLRACE_RETENTION), by partition on PostgreSQL and in bounded batches
// on SQLite.
type RetentionTx interface{}
