// Package monitor owns Millrace's operational picture: it samples the store
// (outbox, unclaimed commands, expired leases, queued queries, executions
// by status, clock skew) and NATS (every Millrace stream's consumers: lag,
// redeliveries; worker presence) on an interval, exports them as Prometheus
// gauges, and answers GET /api/ops, which `millrace doctor` reads.
package monitor
