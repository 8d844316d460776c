// Package faults is the fault matrix of docs/reliability.md: real millrace
// processes (servers, workers) on PostgreSQL and NATS run a mix of
// playbooks while a fault is injected, and every fault must end with 0 lost
// and 0 doubled completions, read back through the store's invariants.
// Everything is in the tests; this file only names the package.
package faults
