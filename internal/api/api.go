// Package api is Millrace's wire contract: the types and constants that
// cross a process boundary, shared by the server, the client and the
// worker. It holds the HTTP API's request and response bodies, the payload a
// command carries to its worker, the event types of the log and the status
// vocabularies.
//
// Database rows live in package store and never go on the wire as they are:
// the server converts them here, so a column can change without changing
// the API, and a worker links none of the server's engine or store.
//
// This package is a leaf: it imports nothing of Millrace but the playbook
// language (for a task's policy and assert) and the metrics layer's
// language (semantic, for a metric query's shape).
package api
