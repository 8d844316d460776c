package relay_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/flow/flowtest"
	"github.com/millrace/millrace/internal/relay"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

// faultyPublisher fails while down is set and records what it accepted.
// A fake is right here: the point is to inject NATS failures on demand.
type faultyPublisher struct {
	mu     sync.Mutex
	down   bool
	failed int // rounds refused
	got    []bus.OutMsg
}

func (p *faultyPublisher) failedRounds() int { p.mu.Lock(); defer p.mu.Unlock(); return p.failed }

func (p *faultyPublisher) PublishBatch(_ context.Context, msgs []bus.OutMsg) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(msgs))
	if p.down {
		p.failed++
	}
	for i, m := range msgs {
		if p.down {
			errs[i] = errors.New("nats: no responders available for request")
			continue
		}
		p.got = append(p.got, m)
	}
	return errs
}

func (p *faultyPublisher) set(down bool) { p.mu.Lock(); p.down = down; p.mu.Unlock() }

func (p *faultyPublisher) msgIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.got {
		out = append(out, m.MsgID)
	}
	return out
}

type bundle struct {
	*flowtest.Stack
	pub *faultyPublisher
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pub := &faultyPublisher{}
	return &bundle{Stack: flowtest.New(t, pub), pub: pub}
}

func TestOutboxSurvivesPublishFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.pub.set(true)
	b.Start(t)
	if _, err := b.Flow.Register(ctx, flowtest.OneStep); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := b.Flow.Execute(ctx, flowtest.OneStepPath, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	// While NATS refuses, every notification stays in the outbox.
	wait.Until(t, 10*time.Second, "several refused publish rounds", func() bool { return b.pub.failedRounds() >= 3 })
	if d := b.OutboxDepth(t); d != 5 {
		t.Fatalf("outbox depth %d while NATS is down, want 5", d)
	}
	b.pub.set(false)
	wait.Until(t, 10*time.Second, "the outbox to drain once NATS is back", func() bool { return b.OutboxDepth(t) == 0 })
	if got := len(b.pub.msgIDs()); got != 5 {
		t.Fatalf("published %d notifications, want 5", got)
	}
}

// gatedPublisher holds each PublishBatch until the test lets it go, so the
// test can change the database between the relay's read and its clear.
type gatedPublisher struct {
	faultyPublisher
	entered chan struct{}
	release chan struct{}
}

func (p *gatedPublisher) PublishBatch(ctx context.Context, msgs []bus.OutMsg) []error {
	errs := make([]error, len(msgs))
	for i := range errs {
		errs[i] = ctx.Err()
	}
	select {
	case p.entered <- struct{}{}:
	case <-ctx.Done(): // the test ended
		return errs
	}
	select {
	case <-p.release:
	case <-ctx.Done():
		return errs
	}
	return p.faultyPublisher.PublishBatch(ctx, msgs)
}

// execute runs n one-step executions and returns the first one's id.
func execute(t *testing.T, b *flowtest.Stack, n int) int64 {
	t.Helper()
	if _, err := b.Flow.Register(t.Context(), flowtest.OneStep); err != nil {
		t.Fatal(err)
	}
	var first int64
	for i := range n {
		e, err := b.Flow.Execute(t.Context(), flowtest.OneStepPath, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = e.ExecutionID
		}
	}
	return first
}

// onlyCommand is the command of a one-step execution.
func onlyCommand(t *testing.T, s *store.Store, execID int64) store.Command {
	t.Helper()
	cmds, err := store.ReadValue(t.Context(), s, func(q store.Querier) ([]store.Command, error) {
		return q.CommandListByExecution(t.Context(), execID)
	})
	if err != nil || len(cmds) != 1 {
		t.Fatalf("commands of execution %d: %v, %v; want one", execID, cmds, err)
	}
	return cmds[0]
}

// A command's notification is published from its row: subject, message id
// and payload as the worker contract wants them, and the row's pending
// state is cleared, so nothing is published twice.
func TestCommandNotificationFromRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.Start(t)
	exec := execute(t, b.Stack, 1)
	wait.Until(t, 10*time.Second, "the notification to be published and cleared", func() bool { return b.OutboxDepth(t) == 0 })
	cmd := onlyCommand(t, b.Store, exec)
	b.pub.mu.Lock()
	got := append([]bus.OutMsg(nil), b.pub.got...)
	b.pub.mu.Unlock()
	if len(got) != 1 || got[0].MsgID != cmd.CommandID || got[0].Subject != bus.DefaultSubject {
		t.Fatalf("published %+v, want one message on %s with Nats-Msg-Id %s", got, bus.DefaultSubject, cmd.CommandID)
	}
	n, err := bus.DecodeNotification(got[0].Data)
	if err != nil || n.EventID != cmd.EventID || n.CommandID != cmd.CommandID || n.ServerURL != "http://127.0.0.1:8082" {
		t.Fatalf("payload %s decodes to %+v, %v; want command %d with the relay's server URL", got[0].Data, n, err, cmd.EventID)
	}
}

// The reaper (or a release) asks for a new notification while the relay
// is publishing the previous one: clearing the previous must not drop the
// new one, which goes out next with a fresh message id.
func TestRepublishDuringPublishIsNotLost(t *testing.T) {
	t.Parallel()
	pub := &gatedPublisher{entered: make(chan struct{}), release: make(chan struct{}, 8)}
	s := flowtest.New(t, pub)
	s.Start(t)
	exec := execute(t, s, 1)
	<-pub.entered // the relay read publishes 1 and is publishing
	cmd := onlyCommand(t, s.Store, exec)
	err := s.Store.Do(t.Context(), cmd.EventID, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.CommandMarkRepublished(ctx, cmd.EventID, time.Now().UTC(), "")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pub.release <- struct{}{}
	<-pub.entered // the second round: the republish
	pub.release <- struct{}{}
	wait.Until(t, 10*time.Second, "the republish to be published and cleared", func() bool { return s.OutboxDepth(t) == 0 })
	if ids, want := pub.msgIDs(), []string{cmd.CommandID, cmd.CommandID + "#2"}; !slices.Equal(ids, want) {
		t.Fatalf("published message ids %v, want %v", ids, want)
	}
}

// A command that ended before its notification went out (its execution
// failed or was cancelled meanwhile) is cleared without publishing.
func TestEndedCommandIsNotPublished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cmd := onlyCommand(t, b.Store, execute(t, b.Stack, 1))
	err := b.Store.Do(t.Context(), cmd.EventID, func(ctx context.Context, tx store.Tx) error {
		c, err := tx.CommandClaim(ctx, store.ClaimParams{EventID: cmd.EventID, WorkerID: "w", Now: time.Now().UTC(), LeaseTTL: time.Minute})
		if err != nil {
			return err
		}
		_, err = tx.CommandFinish(ctx, store.FinishParams{EventID: c.EventID, WorkerID: "w", Attempt: c.Attempt, Status: api.CmdCompleted, Now: time.Now().UTC()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Start(t)
	wait.Until(t, 10*time.Second, "the ended command's notification to be cleared", func() bool { return b.OutboxDepth(t) == 0 })
	if ids := b.pub.msgIDs(); len(ids) != 0 {
		t.Fatalf("published %v for a command that had ended, want nothing", ids)
	}
}

// NATS dies after the command committed and before the relay published
// its notification: nothing holds the notification but the command row.
// Once NATS is back (a fresh memory store: the stream too was lost) the
// relay publishes it, once.
func TestNATSKilledBetweenCommitAndPublish(t *testing.T) {
	t.Parallel()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg := bus.DefaultConfig()
	cfg.URL = srv.URL()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Connect(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if _, err := conn.EnsureStream(t.Context()); err != nil {
		t.Fatal(err)
	}
	pub := &countingPublisher{inner: conn}
	s := flowtest.New(t, pub)
	srv.Server().Shutdown() // NATS is gone before the relay's first look
	s.Start(t)
	exec := execute(t, s, 1)
	wait.Until(t, 20*time.Second, "a failed publish while NATS is down", func() bool { return pub.failures() > 0 })
	if d := s.OutboxDepth(t); d != 1 {
		t.Fatalf("%d notifications pending while NATS is down, want 1 (the command row's)", d)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "the notification to be published once NATS is back", func() bool { return s.OutboxDepth(t) == 0 })
	cmd := onlyCommand(t, s.Store, exec)
	stream, err := conn.JS.Stream(t.Context(), cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("the stream holds %d messages, want the one notification", info.State.Msgs)
	}
	msg, err := stream.GetMsg(t.Context(), info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	n, err := bus.DecodeNotification(msg.Data)
	if err != nil || n.EventID != cmd.EventID || msg.Header.Get("Nats-Msg-Id") != cmd.CommandID {
		t.Fatalf("stream message %s (Nats-Msg-Id %q) decodes to %+v, %v; want command %d", msg.Data, msg.Header.Get("Nats-Msg-Id"), n, err, cmd.EventID)
	}
}

// countingPublisher counts the messages a real connection failed to publish.
type countingPublisher struct {
	inner  relay.Publisher
	mu     sync.Mutex
	failed int
}

func (p *countingPublisher) PublishBatch(ctx context.Context, msgs []bus.OutMsg) []error {
	errs := p.inner.PublishBatch(ctx, msgs)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, err := range errs {
		if err != nil {
			p.failed++
		}
	}
	return errs
}

func (p *countingPublisher) failures() int { p.mu.Lock(); defer p.mu.Unlock(); return p.failed }
