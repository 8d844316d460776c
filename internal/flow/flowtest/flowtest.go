// Package flowtest runs a flow service and its outbox relay over a fresh
// SQLite store, wired as the server wires them, with a publisher the test
// hands in: the harness the flow reaper and relay tests share. It lives
// apart from flow so production code never imports testing.
package flowtest

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/relay"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
	"github.com/millrace/millrace/internal/tools"
)

// OneStep is a playbook of one noop step, registered at OneStepPath.
const (
	OneStep = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: r, path: r/one}
workflow:
  - step: start
    tool: {kind: noop}
`
	OneStepPath = "r/one"
)

// Stack is a flow service whose commands a relay publishes through pub.
type Stack struct {
	Store *store.Store
	Flow  *flow.Service
	Relay *relay.Relay
}

// New wires a Stack over a fresh SQLite store; the relay runs only once
// Start is called. Leases last a second.
func New(t *testing.T, pub relay.Publisher) *Stack {
	t.Helper()
	st := sqlitetest.Store(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &Stack{Store: st}
	s.Relay = relay.New(relay.Config{PollInterval: 20 * time.Millisecond, ServerURL: "http://127.0.0.1:8082"}, st, pub, log)
	s.Flow = flow.New(st, ids.New(-1), flow.Config{LeaseTTL: time.Second}, tools.Kinds(), log, s.Relay.Wake)
	return s
}

// Start runs the relay until the test ends; its cleanup waits for the
// relay to stop, before the store closes.
func (s *Stack) Start(t *testing.T) {
	done := make(chan struct{})
	go func() { defer close(done); s.Relay.Run(t.Context()) }()
	t.Cleanup(func() { <-done })
}

// OutboxDepth is how many notifications wait to be published (Stats).
func (s *Stack) OutboxDepth(t *testing.T) int64 {
	t.Helper()
	st, err := store.ReadValue(t.Context(), s.Store, func(q store.Querier) (store.Stats, error) {
		return q.Stats(t.Context())
	})
	if err != nil {
		t.Fatal(err)
	}
	return st.OutboxDepth
}
