// Package gateway is `millrace gateway`, the NoETL gateway contract: browser
// logins exchanged for sessions (cached in the sessions KV bucket), an
// authenticated proxy from /noetl/{path} to the server's /api/{path}, live
// updates over SSE, execute-and-wait with the requests KV bucket and
// callbacks fanned out over NATS, webhook ingress, and CORS.
package gateway
