package flow_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/flow/flowtest"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
	"github.com/millrace/millrace/internal/tools"
)

// manyStores runs fn on a flow service over each driver: the set-based
// statements differ between them.
func manyStores(t *testing.T, fn func(t *testing.T, f *flow.Service, st *store.Store)) {
	for _, c := range []struct {
		name string
		open func(t *testing.T) *store.Store
	}{
		{"sqlite", func(t *testing.T) *store.Store { return sqlitetest.Store(t) }},
		{"postgres", func(t *testing.T) *store.Store {
			st := store.New(pgtest.Open(t), store.Options{})
			t.Cleanup(func() { _ = st.Close() })
			return st
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := c.open(t)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			f := flow.New(st, ids.New(-1), flow.Config{LeaseTTL: time.Minute}, tools.Kinds(), log, nil)
			if _, err := f.Register(t.Context(), flowtest.OneStep); err != nil {
				t.Fatal(err)
			}
			fn(t, f, st)
		})
	}
}

// started executes the one-step playbook n times and returns each
// execution's command.
func started(t *testing.T, f *flow.Service, st *store.Store, n int) []store.Command {
	t.Helper()
	var out []store.Command
	for range n {
		ex, err := f.Execute(t.Context(), flowtest.OneStepPath, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := store.ReadValue(t.Context(), st, func(q store.Querier) ([]store.Command, error) {
			return q.CommandListByExecution(t.Context(), ex.ExecutionID)
		})
		if err != nil || len(cmds) != 1 {
			t.Fatalf("commands of execution %d: %v, %v", ex.ExecutionID, cmds, err)
		}
		out = append(out, cmds[0])
	}
	return out
}

// One claim batch: a won claim, a lost one (another worker's live lease),
// an unknown command, another win and a repeat of the first: each its own
// answer, the one Claim gives.
func TestClaimManyMixed(t *testing.T) {
	t.Parallel()
	manyStores(t, func(t *testing.T, f *flow.Service, st *store.Store) {
		ctx := t.Context()
		cmds := started(t, f, st, 3)
		if _, err := f.Claim(ctx, cmds[1].EventID, "other", cmds[1].ExecutionID, 0); err != nil {
			t.Fatal(err)
		}
		req := func(c store.Command) flow.ClaimRequest {
			return flow.ClaimRequest{EventID: c.EventID, ExecutionID: c.ExecutionID, WorkerID: "w1", TokenID: 7, Start: true}
		}
		out := f.ClaimMany(ctx, []flow.ClaimRequest{req(cmds[0]), req(cmds[1]), {EventID: 1 << 40, WorkerID: "w1"}, req(cmds[2]), req(cmds[0])})
		for i, want := range []error{nil, flow.ErrNotHolder, flow.ErrCommandNotFound, nil, flow.ErrNotHolder} {
			if got := out[i].Err; want == nil && got != nil || want != nil && !errors.Is(got, want) {
				t.Fatalf("claim %d: %v, want %v", i, got, want)
			}
		}
		for _, i := range []int{0, 3} {
			if c := out[i].Claimed; c.Status != api.CmdRunning || c.WorkerID != "w1" || c.Attempt != 1 || c.ClaimTokenID != 7 || c.LeaseTTL != time.Minute {
				t.Fatalf("claim %d = %+v, want running by w1, attempt 1, token 7", i, c)
			}
		}
		if msg := out[1].Err.Error(); msg != "command "+strconv.FormatInt(cmds[1].EventID, 10)+" is claimed by other (attempt 1) until its lease expires" {
			t.Fatalf("lost claim explained as %q", msg)
		}
		// The winner's events are written once, despite the repeat.
		evs, err := store.ReadValue(ctx, st, func(q store.Querier) ([]store.Event, error) {
			return q.EventList(ctx, cmds[0].ExecutionID)
		})
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, e := range evs {
			types = append(types, e.EventType)
		}
		if got := strings.Join(types, " "); got != "playbook.started command.issued command.claimed command.started" {
			t.Fatalf("events after the batch: %s", got)
		}
	})
}

// One report batch: a valid completion, a stale attempt, a forged token,
// a heartbeat and a completion without an execution hint: each its own
// answer, the one Apply gives, and only the refused ones change nothing.
func TestApplyManyMixed(t *testing.T) {
	t.Parallel()
	manyStores(t, func(t *testing.T, f *flow.Service, st *store.Store) {
		ctx := t.Context()
		cmds := started(t, f, st, 5)
		var reqs []flow.ClaimRequest
		for _, c := range cmds {
			reqs = append(reqs, flow.ClaimRequest{EventID: c.EventID, ExecutionID: c.ExecutionID, WorkerID: "w1", TokenID: 7})
		}
		for i, a := range f.ClaimMany(ctx, reqs) {
			if a.Err != nil {
				t.Fatalf("claim %d: %v", i, a.Err)
			}
		}
		done := func(c store.Command) flow.Report {
			return flow.Report{EventType: api.EvCommandCompleted, EventID: c.EventID, ExecutionID: c.ExecutionID, WorkerID: "w1",
				Attempt: 1, TokenID: 7, Result: json.RawMessage(`{"n": 1}`)}
		}
		stale, forged, beat, unhinted := done(cmds[1]), done(cmds[2]), done(cmds[3]), done(cmds[4])
		stale.Attempt = 2
		forged.TokenID = 8
		beat.EventType, beat.Result = api.EvCommandHeartbeat, nil
		unhinted.ExecutionID = 0
		out := f.ApplyMany(ctx, []flow.Report{stale, done(cmds[0]), forged, beat, unhinted, done(cmds[0])})
		for i, want := range []error{flow.ErrNotHolder, nil, flow.ErrClaimNotYours, nil, nil, flow.ErrNotHolder} {
			if got := out[i].Err; want == nil && got != nil || want != nil && !errors.Is(got, want) {
				t.Fatalf("report %d: %v, want %v", i, got, want)
			}
		}
		if out[1].Ack.Status != api.CmdCompleted || out[1].Ack.EventID == 0 || out[4].Ack.Status != api.CmdCompleted {
			t.Fatalf("acks of the completions: %+v, %+v", out[1].Ack, out[4].Ack)
		}
		for i, want := range []api.ExecStatus{api.ExecCompleted, api.ExecRunning, api.ExecRunning, api.ExecRunning, api.ExecCompleted} {
			ex, err := store.ReadValue(ctx, st, func(q store.Querier) (store.Execution, error) { return q.ExecutionGet(ctx, cmds[i].ExecutionID) })
			if err != nil || ex.Status != want {
				t.Fatalf("execution %d: %s, %v; want %s", i, ex.Status, err, want)
			}
			if want == api.ExecCompleted && string(ex.Result) != `{"n":1}` {
				t.Fatalf("execution %d result %s", i, ex.Result)
			}
		}
		// The refused reports left their holder's claim as it was: the
		// holder's own completions still land.
		retry := f.ApplyMany(ctx, []flow.Report{done(cmds[1]), done(cmds[2])})
		if retry[0].Err != nil || retry[1].Err != nil {
			t.Fatalf("the holder's completions after the refusals: %v, %v", retry[0].Err, retry[1].Err)
		}
	})
}
