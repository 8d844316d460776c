package store

// NotifyQuerier and NotifyTx are the reads and writes of a command's
// pending notification, kept as a state of the command row instead of an
// outbox row (issue 14).
type NotifyQuerier interface{}

// NotifyTx: see NotifyQuerier.
type NotifyTx interface{}
