// Package live owns live execution updates: the small note the server
// publishes on NATS after a commit (a wake-up, never the truth), and Server-
// Sent Events streams that read every event back from the event table after
// the client's Last-Event-ID, so a restart of the gateway or NATS loses
// nothing.
package live
