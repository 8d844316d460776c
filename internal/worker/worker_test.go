package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker"
)

// fakeKind is a stream of JSON messages {"id", "claim", "lane"} with two
// lanes: "fast" (reserves nothing) and "slow" (reserves slowReserve).
type fakeKind struct {
	t           *testing.T
	slowReserve int
	slowMax     int
	// run is each job's work; heartbeat, when set, answers heartbeats.
	run       func(ctx context.Context, id string) error
	heartbeat func(id string) error

	mu       sync.Mutex
	ran      map[string]int
	reported map[string]error
	released map[string]bool
	active   map[string]int // jobs of a lane running now
	peak     map[string]int // most jobs of a lane running at once
	closed   bool
}

func newFakeKind(t *testing.T) *fakeKind {
	return &fakeKind{t: t, ran: map[string]int{}, reported: map[string]error{}, released: map[string]bool{},
		active: map[string]int{}, peak: map[string]int{}}
}

type fakeMsg struct {
	ID    string `json:"id"`
	Claim string `json:"claim,omitempty"` // "gone", "unknown", "fail"
	Lane  string `json:"lane,omitempty"`
}

const fakeStream, fakeSubject = "FAKE", "fake"

func (k *fakeKind) Name() string { return "fake" }

func (k *fakeKind) Lanes(int) []worker.Lane {
	return []worker.Lane{{Stream: fakeStream, Consumer: "fast"}, {Stream: fakeStream, Consumer: "slow", Reserve: k.slowReserve, Max: k.slowMax}}
}

func (k *fakeKind) Ensure(ctx context.Context, conn *bus.Conn) error {
	s, err := conn.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: fakeStream, Subjects: []string{fakeSubject + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		return err
	}
	for _, lane := range []string{"fast", "slow"} {
		if _, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: lane, FilterSubject: fakeSubject + "." + lane,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second}); err != nil {
			return err
		}
	}
	return nil
}

func (k *fakeKind) Decode(data []byte) (worker.Job, error) {
	var m fakeMsg
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return &fakeJob{k: k, m: m}, nil
}

func (k *fakeKind) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
}

type fakeJob struct {
	k *fakeKind
	m fakeMsg
}

func (j *fakeJob) Attr() slog.Attr { return slog.String("id", j.m.ID) }

func (j *fakeJob) Claim(context.Context) error {
	switch j.m.Claim {
	case "gone":
		return fmt.Errorf("%w: 409", worker.ErrGone)
	case "unknown":
		return fmt.Errorf("%w: 404", worker.ErrUnknown)
	}
	return nil
}

func (j *fakeJob) Lease() time.Duration { return 300 * time.Millisecond }

func (j *fakeJob) Heartbeat(context.Context) error {
	if j.k.heartbeat != nil {
		return j.k.heartbeat(j.m.ID)
	}
	return nil
}

func (j *fakeJob) Run(ctx context.Context) error {
	k := j.k
	k.mu.Lock()
	k.ran[j.m.ID]++
	k.active[j.m.Lane]++
	k.peak[j.m.Lane] = max(k.peak[j.m.Lane], k.active[j.m.Lane])
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.active[j.m.Lane]--
		k.mu.Unlock()
	}()
	if k.run == nil {
		return nil
	}
	return k.run(ctx, j.m.ID)
}

func (j *fakeJob) Report(_ context.Context, runErr error) (string, error) {
	j.k.mu.Lock()
	defer j.k.mu.Unlock()
	j.k.reported[j.m.ID] = runErr
	return "completed", nil
}

func (j *fakeJob) Release(context.Context) error {
	j.k.mu.Lock()
	defer j.k.mu.Unlock()
	j.k.released[j.m.ID] = true
	return nil
}

// snapshot reads the kind's records under its lock.
func (k *fakeKind) snapshot(fn func(k *fakeKind)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	fn(k)
}

// stack is one test's NATS and a runtime of kind k.
type stack struct {
	t    *testing.T
	js   jetstream.JetStream
	conn *bus.Conn
	rt   *worker.Runtime
	stop context.CancelFunc
	done chan struct{} // closed when Run returned
}

func start(t *testing.T, k *fakeKind, concurrency int, grace time.Duration, opts ...func(*worker.Config)) *stack {
	t.Helper()
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	cfg := bus.DefaultConfig()
	cfg.URL, cfg.FetchTimeout, cfg.FetchHeartbeat = emb.URL(), time.Second, 400*time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	wcfg := worker.Config{Concurrency: concurrency, ShutdownGrace: grace, NATS: cfg}
	for _, o := range opts {
		o(&wcfg)
	}
	rt, err := worker.New(t.Context(), wcfg, k, log)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Connect(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	ctx, cancel := context.WithCancel(context.Background())
	s := &stack{t: t, js: conn.JS, conn: conn, rt: rt, stop: cancel, done: make(chan struct{})}
	go func() { defer close(s.done); _ = rt.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

func (s *stack) publish(data string, lane string) {
	s.t.Helper()
	if _, err := s.js.Publish(s.t.Context(), fakeSubject+"."+lane, []byte(data)); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) send(m fakeMsg) {
	s.t.Helper()
	if m.Lane == "" {
		m.Lane = "fast"
	}
	b, _ := json.Marshal(m)
	s.publish(string(b), m.Lane)
}

// settled is nil once a lane's consumer has nothing pending or unacknowledged.
func (s *stack) settled(lane string) error {
	c, err := s.js.Consumer(s.t.Context(), fakeStream, lane)
	if err != nil {
		return err
	}
	ci, err := c.Info(s.t.Context())
	if err != nil {
		return err
	}
	if ci.NumPending != 0 || ci.NumAckPending != 0 {
		return fmt.Errorf("consumer %s: %d pending, %d unacknowledged", lane, ci.NumPending, ci.NumAckPending)
	}
	if ci.NumRedelivered != 0 {
		return fmt.Errorf("consumer %s: %d redelivered", lane, ci.NumRedelivered)
	}
	return nil
}

// Poison is terminated, a job gone elsewhere acknowledged, one the server
// does not know terminated: none runs, none is redelivered.
func TestRuntimeClaimOutcomes(t *testing.T) {
	t.Parallel()
	k := newFakeKind(t)
	s := start(t, k, 4, time.Second)
	s.publish("not json", "fast")
	s.send(fakeMsg{ID: "gone", Claim: "gone"})
	s.send(fakeMsg{ID: "unknown", Claim: "unknown"})
	s.send(fakeMsg{ID: "ok"})
	wait.For(t, 10*time.Second, func() error {
		var err error
		k.snapshot(func(k *fakeKind) {
			if _, ok := k.reported["ok"]; !ok {
				err = errors.New("job ok not reported yet")
			}
		})
		if err != nil {
			return err
		}
		return s.settled("fast")
	})
	k.snapshot(func(k *fakeKind) {
		if k.ran["gone"] != 0 || k.ran["unknown"] != 0 || k.ran["ok"] != 1 {
			t.Fatalf("ran %v; want only ok, once", k.ran)
		}
	})
}

// A background lane leaves its reserve free for the interactive lane: with
// a backlog of slow jobs, a fast one still starts at once.
func TestRuntimeLaneReserve(t *testing.T) {
	t.Parallel()
	k := newFakeKind(t)
	k.slowReserve = 1
	release := make(chan struct{})
	k.run = func(ctx context.Context, id string) error {
		if id == "fast" {
			return nil
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	s := start(t, k, 3, 5*time.Second)
	for i := range 6 {
		s.send(fakeMsg{ID: fmt.Sprint("slow", i), Lane: "slow"})
	}
	wait.For(t, 10*time.Second, func() error {
		var err error
		k.snapshot(func(k *fakeKind) {
			if k.active["slow"] != 2 {
				err = fmt.Errorf("%d slow jobs running, want 2 (3 slots, 1 reserved)", k.active["slow"])
			}
		})
		return err
	})
	s.send(fakeMsg{ID: "fast"})
	wait.For(t, 10*time.Second, func() error {
		var err error
		k.snapshot(func(k *fakeKind) {
			if _, ok := k.reported["fast"]; !ok {
				err = errors.New("the fast job did not run beside the slow backlog")
			}
		})
		return err
	})
	close(release)
	wait.For(t, 20*time.Second, func() error { return s.settled("slow") })
	k.snapshot(func(k *fakeKind) {
		if k.peak["slow"] > 2 {
			t.Fatalf("%d slow jobs ran at once, want at most 2", k.peak["slow"])
		}
	})
}

// A lane's Max caps its jobs however many slots are free, and the other
// lane still gets the rest.
func TestRuntimeLaneMax(t *testing.T) {
	t.Parallel()
	k := newFakeKind(t)
	k.slowMax = 1
	release := make(chan struct{})
	k.run = func(ctx context.Context, id string) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	s := start(t, k, 4, 5*time.Second)
	for i := range 4 {
		s.send(fakeMsg{ID: fmt.Sprint("slow", i), Lane: "slow"})
	}
	running := func(lane string, n int) func() error {
		return func() error {
			var err error
			k.snapshot(func(k *fakeKind) {
				if k.active[lane] != n {
					err = fmt.Errorf("%d %s jobs running, want %d", k.active[lane], lane, n)
				}
			})
			return err
		}
	}
	wait.For(t, 10*time.Second, running("slow", 1))
	for i := range 3 {
		s.send(fakeMsg{ID: fmt.Sprint("fast", i)})
	}
	wait.For(t, 10*time.Second, running("fast", 3))
	close(release)
	wait.For(t, 20*time.Second, func() error { return errors.Join(s.settled("slow"), s.settled("fast")) })
	k.snapshot(func(k *fakeKind) {
		if k.peak["slow"] != 1 || len(k.reported) != 7 {
			t.Fatalf("peak slow jobs %d (want 1), %d reported (want 7)", k.peak["slow"], len(k.reported))
		}
	})
}

// A heartbeat that finds the claim lost stops the job: its context ends,
// nothing is reported, the message is acknowledged.
func TestRuntimeLeaseLost(t *testing.T) {
	t.Parallel()
	k := newFakeKind(t)
	var beats atomic.Int64
	k.heartbeat = func(string) error {
		if beats.Add(1) >= 2 {
			return fmt.Errorf("%w: 409", worker.ErrLost)
		}
		return nil
	}
	k.run = func(ctx context.Context, _ string) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return errors.New("the job was not stopped")
		}
	}
	s := start(t, k, 2, time.Second)
	s.send(fakeMsg{ID: "long"})
	wait.For(t, 10*time.Second, func() error {
		var err error
		k.snapshot(func(k *fakeKind) {
			if k.ran["long"] != 1 || k.active["fast"] != 0 {
				err = fmt.Errorf("ran %d, running %d", k.ran["long"], k.active["fast"])
			}
		})
		if err != nil {
			return err
		}
		return s.settled("fast")
	})
	k.snapshot(func(k *fakeKind) {
		if _, ok := k.reported["long"]; ok {
			t.Fatal("a job whose lease was lost reported a result")
		}
	})
}

// Shutdown: a job that ends within the grace is reported; one that does
// not is stopped and released; Run returns only after both ended, and
// then the kind is closed.
func TestRuntimeShutdown(t *testing.T) {
	t.Parallel()
	k := newFakeKind(t)
	k.run = func(ctx context.Context, id string) error {
		d := 200 * time.Millisecond
		if id == "stuck" {
			d = time.Minute
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	s := start(t, k, 4, time.Second)
	s.send(fakeMsg{ID: "quick"})
	s.send(fakeMsg{ID: "stuck"})
	wait.For(t, 10*time.Second, func() error {
		var err error
		k.snapshot(func(k *fakeKind) {
			if k.ran["quick"] != 1 || k.ran["stuck"] != 1 {
				err = fmt.Errorf("ran %v", k.ran)
			}
		})
		return err
	})
	begin := time.Now()
	s.stop()
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after the grace ran out")
	}
	if d := time.Since(begin); d < time.Second {
		t.Fatalf("Run returned after %s, before the 1s grace", d)
	}
	k.snapshot(func(k *fakeKind) {
		if k.active["fast"] != 0 {
			t.Fatalf("Run returned with %d jobs running", k.active["fast"])
		}
		if err, ok := k.reported["quick"]; !ok || err != nil {
			t.Fatalf("the job that finished within the grace: reported %v (%v)", ok, err)
		}
		if _, ok := k.reported["stuck"]; ok || !k.released["stuck"] {
			t.Fatalf("the job still running after the grace: reported %v, released %v; want released only", ok, k.released["stuck"])
		}
		if !k.closed {
			t.Fatal("the kind was not closed")
		}
	})
}

// consumerInfo reads a lane's consumer.
func (s *stack) consumerInfo(lane string) (*jetstream.ConsumerInfo, error) {
	c, err := s.js.Consumer(s.t.Context(), fakeStream, lane)
	if err != nil {
		return nil, err
	}
	return c.Info(s.t.Context())
}

// Acked on claim, a running job's message is no longer pending on the
// consumer (max_ack_pending does not count it), its claim is still
// heartbeaten, and the runtime still fetches no more messages than it has
// free slots; acked on completion, every running job's message stays
// unacknowledged until its report.
func TestRuntimeAckPoint(t *testing.T) {
	t.Parallel()
	for _, onClaim := range []bool{true, false} {
		t.Run(fmt.Sprint("ack_on_claim=", onClaim), func(t *testing.T) {
			t.Parallel()
			k := newFakeKind(t)
			release := make(chan struct{})
			var beats atomic.Int64
			k.heartbeat = func(string) error { beats.Add(1); return nil }
			k.run = func(ctx context.Context, _ string) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}
			const slots, sent = 2, 5
			s := start(t, k, slots, 5*time.Second, func(c *worker.Config) { c.AckOnClaim = onClaim })
			for i := range sent {
				s.send(fakeMsg{ID: fmt.Sprint("job", i)})
			}
			wantAckPending := slots
			if onClaim {
				wantAckPending = 0
			}
			wait.For(t, 10*time.Second, func() error {
				var err error
				k.snapshot(func(k *fakeKind) {
					if k.active["fast"] != slots {
						err = fmt.Errorf("%d jobs running, want %d", k.active["fast"], slots)
					}
				})
				if err != nil {
					return err
				}
				ci, err := s.consumerInfo("fast")
				if err != nil {
					return err
				}
				// Only as many messages as slots were fetched: the rest
				// wait in the stream, not in a worker's buffer.
				if ci.NumAckPending != wantAckPending || ci.NumPending != sent-slots {
					return fmt.Errorf("consumer: %d unacknowledged (want %d), %d pending (want %d)", ci.NumAckPending, wantAckPending, ci.NumPending, sent-slots)
				}
				// The lease (300 ms) is renewed at a third of it.
				if n := beats.Load(); n < 2*slots {
					return fmt.Errorf("%d heartbeats so far, want at least %d", n, 2*slots)
				}
				return nil
			})
			close(release)
			wait.For(t, 20*time.Second, func() error {
				var err error
				k.snapshot(func(k *fakeKind) {
					if len(k.reported) != sent {
						err = fmt.Errorf("%d of %d reported", len(k.reported), sent)
					}
				})
				if err != nil {
					return err
				}
				return s.settled("fast")
			})
			k.snapshot(func(k *fakeKind) {
				if k.peak["fast"] > slots {
					t.Fatalf("%d jobs ran at once on %d slots", k.peak["fast"], slots)
				}
				for id, n := range k.ran {
					if n != 1 {
						t.Fatalf("job %s ran %d times", id, n)
					}
				}
			})
		})
	}
}

// Acked on claim, a job released at shutdown is not NAKed (its message is
// acknowledged already: the release re-notifies it) and a job whose lease
// is lost leaves nothing unacknowledged behind.
func TestRuntimeAckOnClaimShutdown(t *testing.T) {
	t.Parallel()
	k := newFakeKind(t)
	k.run = func(ctx context.Context, id string) error {
		<-ctx.Done()
		return ctx.Err()
	}
	s := start(t, k, 2, 500*time.Millisecond, func(c *worker.Config) { c.AckOnClaim = true })
	s.send(fakeMsg{ID: "stuck"})
	wait.For(t, 10*time.Second, func() error {
		var err error
		k.snapshot(func(k *fakeKind) {
			if k.active["fast"] != 1 {
				err = errors.New("the job is not running yet")
			}
		})
		if err != nil {
			return err
		}
		return s.settled("fast")
	})
	s.stop()
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after the grace ran out")
	}
	k.snapshot(func(k *fakeKind) {
		if !k.released["stuck"] {
			t.Fatal("the job still running after the grace was not released")
		}
	})
	if err := s.settled("fast"); err != nil {
		t.Fatalf("after the release: %v; want the message left acknowledged (the release re-notifies)", err)
	}
}
