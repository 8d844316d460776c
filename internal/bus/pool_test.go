package bus

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/wait"
)

func TestCheckPool(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "gpu", "a", "0", "gpu-2", "x1-y2", strings.Repeat("a", MaxPoolName)} {
		if err := CheckPool(ok); err != nil {
			t.Errorf("CheckPool(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"GPU", "-gpu", "gpu-", "gpu_a", "gpu.a", "gpu a", "*", ">", "gpü", strings.Repeat("a", MaxPoolName+1)} {
		if err := CheckPool(bad); err == nil {
			t.Errorf("CheckPool(%q) = nil, want an error", bad)
		}
	}
}

func TestPoolNames(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	if got := cfg.ConsumerConfig(); got.Durable != DefaultConsumer || got.FilterSubject != DefaultSubject {
		t.Errorf("default pool: durable %q filter %q, want %q %q", got.Durable, got.FilterSubject, DefaultConsumer, DefaultSubject)
	}
	cfg.Pool = "gpu"
	if got := cfg.ConsumerConfig(); got.Durable != "noetl_worker_pool_gpu" || got.FilterSubject != "noetl.commands.gpu" {
		t.Errorf("pool gpu: durable %q filter %q, want noetl_worker_pool_gpu noetl.commands.gpu", got.Durable, got.FilterSubject)
	}
	cfg.Pool = AllPools
	if got := cfg.ConsumerConfig(); got.Durable != DefaultConsumer || got.FilterSubject != "" {
		t.Errorf("all pools: durable %q filter %q, want %q and none", got.Durable, got.FilterSubject, DefaultConsumer)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("AllPools must validate (millrace dev uses it): %v", err)
	}
}

// A routed notification reaches only its pool's consumer, and an ordinary
// one only the default consumer.
func TestPoolRouting(t *testing.T) {
	t.Parallel()
	b := setup(t)
	def, err := b.conn.EnsureConsumer(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	gconn := b.connPool(t, "gpu")
	gpu, err := gconn.EnsureConsumer(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if name := gpu.CachedInfo().Name; name != b.cfg.Consumer+"_gpu" {
		t.Fatalf("pool consumer = %q, want %q", name, b.cfg.Consumer+"_gpu")
	}
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, []OutMsg{
		{Subject: PoolSubject(b.cfg.Subject, ""), MsgID: "default-1", Data: []byte("default")},
		{Subject: PoolSubject(b.cfg.Subject, "gpu"), MsgID: "gpu-1", Data: []byte("gpu")},
		{Subject: PoolSubject(b.cfg.Subject, "other"), MsgID: "other-1", Data: []byte("other")},
	}))
	for _, tc := range []struct {
		cons jetstream.Consumer
		want string
	}{{def, "default"}, {gpu, "gpu"}} {
		batch, err := tc.cons.Fetch(10, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for m := range batch.Messages() {
			got = append(got, string(m.Data()))
			_ = m.Ack()
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), jetstream.ErrNoMessages) {
			t.Fatal(batch.Error())
		}
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("consumer %s got %q, want only %q", tc.cons.CachedInfo().Name, got, tc.want)
		}
	}
}

// A pool worker refuses a stream that cannot carry its subject, naming the
// pool and the remedy; the default pool only warns.
func TestEnsureStreamPoolSubject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	narrow := b.cfg.StreamConfig()
	narrow.Subjects = []string{b.cfg.Subject}
	if _, err := b.conn.JS.CreateStream(b.ctx, narrow); err != nil {
		t.Fatal(err)
	}
	if _, err := b.conn.EnsureStream(b.ctx); err != nil {
		t.Fatalf("default pool: %v", err)
	}
	if logs := b.logs.String(); !strings.Contains(logs, "does not capture the worker pools' subjects") {
		t.Errorf("no warning about pool subjects; logs:\n%s", logs)
	}
	gconn := b.connPool(t, "gpu")
	_, err := gconn.EnsureConsumer(b.ctx)
	if !errors.Is(err, ErrSubjectMismatch) {
		t.Fatalf("pool worker EnsureConsumer = %v, want ErrSubjectMismatch", err)
	}
	for _, want := range []string{b.cfg.Subject + ".gpu", "MILLRACE_WORKER_POOL", "millrace nats stream rm " + b.cfg.Stream} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// millrace dev's workers (AllPools) open the default consumer to every
// pool's subject, and an ordinary default worker narrows it back.
func TestAllPoolsReconcilesFilter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.conn.EnsureConsumer(b.ctx); err != nil {
		t.Fatal(err)
	}
	aconn := b.connPool(t, AllPools)
	cons, err := aconn.EnsureConsumer(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f := cons.CachedInfo().Config.FilterSubject; f != "" {
		t.Fatalf("all pools: filter %q, want none", f)
	}
	if cons, err = b.conn.EnsureConsumer(b.ctx); err != nil {
		t.Fatal(err)
	}
	if f := cons.CachedInfo().Config.FilterSubject; f != b.cfg.Subject {
		t.Fatalf("default pool after all pools: filter %q, want %q", f, b.cfg.Subject)
	}
}

// The reaper's backlog is what the default and the pools' consumers have
// not delivered, and nothing else on the stream.
func TestCommandBacklog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := b.conn.EnsureStream(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.conn.CommandBacklog(b.ctx); err == nil || !strings.Contains(err.Error(), b.cfg.Consumer) {
		t.Fatalf("CommandBacklog without consumers = %v, want an error naming %s", err, b.cfg.Consumer)
	}
	if _, err := b.conn.EnsureConsumer(b.ctx); err != nil {
		t.Fatal(err)
	}
	gconn := b.connPool(t, "gpu")
	if _, err := gconn.EnsureConsumer(b.ctx); err != nil {
		t.Fatal(err)
	}
	// Not a command consumer: an operator's own, on another sub-subject.
	if _, err := s.CreateConsumer(b.ctx, jetstream.ConsumerConfig{Durable: "audit", FilterSubject: b.cfg.Subject + ".audit", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	var msgs []OutMsg
	for i, pool := range []string{"", "", "gpu", "gpu", "gpu", "audit", "audit", "audit", "audit"} {
		msgs = append(msgs, OutMsg{Subject: PoolSubject(b.cfg.Subject, pool), MsgID: fmt.Sprint(i), Data: []byte("x")})
	}
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, msgs))
	// num_pending follows new messages asynchronously in nats-server.
	wait.For(t, 10*time.Second, func() error {
		n, created, err := b.conn.CommandBacklog(b.ctx)
		if err != nil {
			return err
		}
		if n != 5 || created.IsZero() {
			return fmt.Errorf("backlog %d (stream created %v), want 5: 2 default + 3 gpu, not the 4 audit", n, created)
		}
		return nil
	})
}

// connPool connects with b's names for another pool's workers, closed when
// the test ends.
func (b *testBundle) connPool(t *testing.T, pool string) *Conn {
	t.Helper()
	cfg := b.cfg
	cfg.Pool = pool
	c, err := Connect(b.ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
