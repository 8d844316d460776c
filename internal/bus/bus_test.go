package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/wait"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// sharedServer serves every test that does not restart or reconfigure the
// server; tests isolate themselves with unique stream, subject and consumer
// names (see uniqueConfig).
var sharedServer *Embedded

func TestMain(m *testing.M) {
	srv, err := StartEmbedded(EmbeddedOptions{Port: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedServer = srv
	code := m.Run()
	srv.Shutdown()
	os.Exit(code)
}

var testSeq atomic.Int64

// uniqueConfig is DefaultConfig pointed at url with names no other test uses.
func uniqueConfig(url string) Config {
	n := testSeq.Add(1)
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.Stream = fmt.Sprintf("T%d_COMMANDS", n)
	cfg.Subject = fmt.Sprintf("test%d.commands", n)
	cfg.Consumer = fmt.Sprintf("t%d_pool", n)
	return cfg
}

type testBundle struct {
	ctx  context.Context
	srv  *Embedded
	cfg  Config
	conn *Conn
	logs *syncBuffer
}

type setupOpts struct {
	ownServer bool // a private server, for tests that restart it
	embedded  EmbeddedOptions
	config    func(*Config)
}

// setup connects to the shared server (or a private one) with unique names.
func setup(t *testing.T, opts ...setupOpts) *testBundle {
	t.Helper()
	var o setupOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	srv := sharedServer
	if o.ownServer {
		if o.embedded.Port == 0 {
			o.embedded.Port = -1
		}
		var err error
		srv, err = StartEmbedded(o.embedded)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
	}
	b := &testBundle{ctx: ctx, srv: srv, cfg: uniqueConfig(srv.URLWithCredentials()), logs: &syncBuffer{}}
	if o.config != nil {
		o.config(&b.cfg)
	}
	conn, err := Connect(ctx, b.cfg, slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	b.conn = conn
	return b
}

// syncBuffer collects log output written from NATS callback goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func streamInfo(t *testing.T, b *testBundle) *jetstream.StreamInfo {
	t.Helper()
	s, err := b.conn.JS.Stream(b.ctx, b.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func requireNoErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

func testNotification(exec, event int64, step string) Notification {
	return Notification{
		ExecutionID: exec,
		EventID:     event,
		CommandID:   CommandID(exec, step, event),
		Step:        step,
		ServerURL:   "http://127.0.0.1:8082",
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"empty url", func(c *Config) { c.URL = "" }, "NATS_URL is empty"},
		{"bad scheme", func(c *Config) { c.URL = "http://u:secret@host:4222" }, "scheme must be"},
		{"no host", func(c *Config) { c.URL = "nats://" }, "has no host"},
		{"password without user", func(c *Config) { c.Password = "x" }, "NATS_USER is empty"},
		{"stream with dot", func(c *Config) { c.Stream = "A.B" }, "NATS_STREAM"},
		{"empty consumer", func(c *Config) { c.Consumer = "" }, "NATS_CONSUMER"},
		{"wildcard subject", func(c *Config) { c.Subject = "noetl.*" }, "wildcards"},
		{"empty token subject", func(c *Config) { c.Subject = "noetl..commands" }, "empty tokens"},
		{"storage", func(c *Config) { c.Storage = "disk" }, `storage "disk"`},
		{"max deliver", func(c *Config) { c.MaxDeliver = 0 }, "max deliver"},
		{"max ack pending", func(c *Config) { c.MaxAckPending = -2 }, "max ack pending"},
		{"ack wait", func(c *Config) { c.AckWait = 0 }, "ack wait"},
		{"heartbeat vs timeout", func(c *Config) { c.FetchTimeout = 5 * time.Second }, "twice the fetch heartbeat"},
		{"no replicas", func(c *Config) { c.Replicas = 0 }, "NATS_REPLICAS"},
		{"too many replicas", func(c *Config) { c.Replicas = 6 }, "replicas (NATS_REPLICAS) 6: must be 1 to 5"},
		{"pool with upper case", func(c *Config) { c.Pool = "GPU" }, "MILLRACE_WORKER_POOL"},
		{"pool with dot", func(c *Config) { c.Pool = "gpu.a" }, "MILLRACE_WORKER_POOL"},
		{"pool too long", func(c *Config) { c.Pool = strings.Repeat("a", MaxPoolName+1) }, "at most 63"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestSubjectMatches(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, subject string
		want             bool
	}{
		{"noetl.commands", "noetl.commands", true},
		{"noetl.commands.>", "noetl.commands", false},
		{"noetl.>", "noetl.commands", true},
		{"noetl.*", "noetl.commands", true},
		{"*.commands", "noetl.commands", true},
		{">", "noetl.commands", true},
		{"noetl.*", "noetl.commands.x", false},
		{"noetl.commands.x", "noetl.commands", false},
		{"other.commands", "noetl.commands", false},
	}
	for _, tc := range cases {
		if got := subjectMatches(tc.pattern, tc.subject); got != tc.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tc.pattern, tc.subject, got, tc.want)
		}
	}
}

func TestEnsureStreamCreatesConfiguredStream(t *testing.T) {
	t.Parallel()
	for _, storage := range []string{StorageMemory, StorageFile} {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{config: func(c *Config) { c.Storage = storage }})
			if _, err := b.conn.EnsureStream(b.ctx); err != nil {
				t.Fatal(err)
			}
			cfg := streamInfo(t, b).Config
			if cfg.Retention != jetstream.LimitsPolicy {
				t.Errorf("retention = %v, want limits", cfg.Retention)
			}
			wantSubjects := []string{b.cfg.Subject, b.cfg.Subject + ".>"}
			if fmt.Sprint(cfg.Subjects) != fmt.Sprint(wantSubjects) {
				t.Errorf("subjects = %v, want %v", cfg.Subjects, wantSubjects)
			}
			wantStorage := map[string]jetstream.StorageType{StorageMemory: jetstream.MemoryStorage, StorageFile: jetstream.FileStorage}[storage]
			if cfg.Storage != wantStorage {
				t.Errorf("storage = %v, want %v", cfg.Storage, wantStorage)
			}
			if cfg.MaxAge != 3600*time.Second {
				t.Errorf("max_age = %v, want 3600s", cfg.MaxAge)
			}
			if cfg.Duplicates != 2*time.Minute {
				t.Errorf("duplicates = %v, want 2m", cfg.Duplicates)
			}

			// A second call accepts the stream it created.
			if _, err := b.conn.EnsureStream(b.ctx); err != nil {
				t.Fatalf("second EnsureStream: %v", err)
			}
		})
	}
}

func TestEnsureStreamKeepsExistingStreamUnchanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	existing := b.cfg.StreamConfig()
	existing.MaxAge = 10 * time.Minute
	existing.Subjects = []string{b.cfg.Subject} // still covers the subject
	if _, err := b.conn.JS.CreateStream(b.ctx, existing); err != nil {
		t.Fatal(err)
	}
	if _, err := b.conn.EnsureStream(b.ctx); err != nil {
		t.Fatal(err)
	}
	cfg := streamInfo(t, b).Config
	if cfg.MaxAge != 10*time.Minute || len(cfg.Subjects) != 1 {
		t.Fatalf("existing stream was modified: max_age %v subjects %v", cfg.MaxAge, cfg.Subjects)
	}
	if !strings.Contains(b.logs.String(), "max_age=10m0s (configured 1h0m0s)") {
		t.Errorf("difference not logged; logs:\n%s", b.logs)
	}
}

func TestEnsureStreamRejectsWorkqueueStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wq := b.cfg.StreamConfig()
	wq.Retention = jetstream.WorkQueuePolicy
	if _, err := b.conn.JS.CreateStream(b.ctx, wq); err != nil {
		t.Fatal(err)
	}
	_, err := b.conn.EnsureStream(b.ctx)
	if !errors.Is(err, ErrWorkqueueStream) {
		t.Fatalf("EnsureStream = %v, want ErrWorkqueueStream", err)
	}
	for _, want := range []string{"retention=limits", "millrace nats stream rm " + b.cfg.Stream, "restart the server and workers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if _, err := b.conn.EnsureConsumer(b.ctx); !errors.Is(err, ErrWorkqueueStream) {
		t.Errorf("EnsureConsumer = %v, want ErrWorkqueueStream", err)
	}
	if streamInfo(t, b).Config.Retention != jetstream.WorkQueuePolicy {
		t.Error("the workqueue stream was modified")
	}
}

func TestEnsureStreamRejectsSubjectMismatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := b.cfg.StreamConfig()
	other.Subjects = []string{b.cfg.Subject + ".other"}
	if _, err := b.conn.JS.CreateStream(b.ctx, other); err != nil {
		t.Fatal(err)
	}
	_, err := b.conn.EnsureStream(b.ctx)
	if !errors.Is(err, ErrSubjectMismatch) {
		t.Fatalf("EnsureStream = %v, want ErrSubjectMismatch", err)
	}
	for _, want := range []string{b.cfg.Subject + ".other", strconv.Quote(b.cfg.Subject), "NATS_SUBJECT", "millrace nats stream rm " + b.cfg.Stream} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestEnsureStreamSubjectOverlap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Another stream already owns our subjects.
	squatter := b.cfg.StreamConfig()
	squatter.Name = b.cfg.Stream + "_OTHER"
	if _, err := b.conn.JS.CreateStream(b.ctx, squatter); err != nil {
		t.Fatal(err)
	}
	_, err := b.conn.EnsureStream(b.ctx)
	if err == nil || !strings.Contains(err.Error(), "another stream already captures") {
		t.Fatalf("EnsureStream = %v, want subject overlap explanation", err)
	}
}

func TestEnsureConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.conn.EnsureConsumer(b.ctx); err != nil {
		t.Fatal(err)
	}
	s, err := b.conn.JS.Stream(b.ctx, b.cfg.Stream)
	if err != nil {
		t.Fatalf("EnsureConsumer did not create the stream: %v", err)
	}
	cons, err := s.Consumer(b.ctx, b.cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Durable != b.cfg.Consumer {
		t.Errorf("durable = %q, want %q", c.Durable, b.cfg.Consumer)
	}
	if c.DeliverPolicy != jetstream.DeliverNewPolicy {
		t.Errorf("deliver policy = %v, want new", c.DeliverPolicy)
	}
	if c.AckPolicy != jetstream.AckExplicitPolicy {
		t.Errorf("ack policy = %v, want explicit", c.AckPolicy)
	}
	if c.AckWait != 30*time.Second {
		t.Errorf("ack wait = %v, want 30s", c.AckWait)
	}
	if c.MaxDeliver != 1000 {
		t.Errorf("max deliver = %d, want 1000", c.MaxDeliver)
	}
	if c.MaxAckPending != 64 {
		t.Errorf("max ack pending = %d, want 64", c.MaxAckPending)
	}
	if c.FilterSubject != b.cfg.Subject || len(c.FilterSubjects) != 0 {
		t.Errorf("filter = %q %v, want exactly %q (routed pools' subjects excluded)", c.FilterSubject, c.FilterSubjects, b.cfg.Subject)
	}
	if _, err := b.conn.EnsureConsumer(b.ctx); err != nil {
		t.Fatalf("second EnsureConsumer: %v", err)
	}
	if strings.Contains(b.logs.String(), "updated NATS consumer") {
		t.Errorf("an unchanged consumer was updated; logs:\n%s", b.logs)
	}
}

func TestEnsureConsumerUpdatesDriftedConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := b.conn.EnsureStream(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	drifted := b.cfg.ConsumerConfig()
	drifted.AckWait = 5 * time.Second
	drifted.MaxDeliver = 3
	drifted.MaxAckPending = 7
	drifted.FilterSubject = "" // an older version's unfiltered consumer
	if _, err := s.CreateConsumer(b.ctx, drifted); err != nil {
		t.Fatal(err)
	}
	cons, err := b.conn.EnsureConsumer(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.AckWait != DefaultAckWait || c.MaxDeliver != DefaultMaxDeliver || c.MaxAckPending != DefaultMaxAckPending || c.FilterSubject != b.cfg.Subject {
		t.Fatalf("consumer not updated: ack_wait %v max_deliver %d max_ack_pending %d filter %q",
			c.AckWait, c.MaxDeliver, c.MaxAckPending, c.FilterSubject)
	}
	logs := b.logs.String()
	for _, want := range []string{"updated NATS consumer", "max_deliver 3 -> 1000", "ack_wait 5s -> 30s", `filter none -> \"` + b.cfg.Subject + `\"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs do not contain %q:\n%s", want, logs)
		}
	}
}

func TestPublishBatchDeliversNotifications(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cons, err := b.conn.EnsureConsumer(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	sent := []Notification{testNotification(1, 2, "start"), testNotification(1, 3, "fetch:page"), testNotification(9, 10, "end")}
	msgs := make([]OutMsg, len(sent))
	for i, n := range sent {
		msgs[i] = b.conn.NotificationMsg(n)
	}
	// One message on a pool's sub-subject: the stream keeps it, but the
	// default pool's consumer does not take it (TestPoolRouting).
	msgs[2].Subject = b.cfg.Subject + ".pool-a"
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, msgs))
	if n := streamInfo(t, b).State.Msgs; n != 3 {
		t.Errorf("stream holds %d messages, want 3", n)
	}
	sent = sent[:2]

	batch, err := cons.Fetch(len(sent), jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []Notification
	for m := range batch.Messages() {
		n, err := DecodeNotification(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if m.Headers().Get("Nats-Msg-Id") != n.CommandID {
			t.Errorf("Nats-Msg-Id = %q, want command id %q", m.Headers().Get("Nats-Msg-Id"), n.CommandID)
		}
		got = append(got, n)
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if batch.Error() != nil {
		t.Fatal(batch.Error())
	}
	if fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("received %v, want %v", got, sent)
	}
}

func TestPublishBatchDeduplicatesByMsgID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.conn.EnsureStream(b.ctx); err != nil {
		t.Fatal(err)
	}
	msg := b.conn.NotificationMsg(testNotification(5, 6, "step"))
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, []OutMsg{msg, msg}))
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, []OutMsg{msg}))
	if n := streamInfo(t, b).State.Msgs; n != 1 {
		t.Fatalf("stream has %d messages, want 1 after publishing the same MsgID three times", n)
	}
	// Without a MsgID there is no deduplication.
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, []OutMsg{{Data: msg.Data}, {Data: msg.Data}}))
	if n := streamInfo(t, b).State.Msgs; n != 3 {
		t.Fatalf("stream has %d messages, want 3", n)
	}
}

func TestPublishBatchCreatesMissingStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	msgs := []OutMsg{b.conn.NotificationMsg(testNotification(1, 2, "a")), b.conn.NotificationMsg(testNotification(1, 3, "b"))}
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, msgs))
	if n := streamInfo(t, b).State.Msgs; n != 2 {
		t.Fatalf("stream has %d messages, want 2", n)
	}
}

func TestPublishBatchSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ownServer: true})
	if _, err := b.conn.EnsureStream(b.ctx); err != nil {
		t.Fatal(err)
	}
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, []OutMsg{b.conn.NotificationMsg(testNotification(1, 2, "before"))}))

	// A memory stream does not survive the restart; PublishBatch must ride
	// out the reconnect and recreate the stream.
	if err := b.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	msgs := make([]OutMsg, 10)
	for i := range msgs {
		msgs[i] = b.conn.NotificationMsg(testNotification(2, int64(10+i), "after"))
	}
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, msgs))
	if n := streamInfo(t, b).State.Msgs; n != uint64(len(msgs)) {
		t.Fatalf("stream has %d messages, want %d (only those published after the restart)", n, len(msgs))
	}
	logs := b.logs.String()
	for _, want := range []string{"NATS disconnected", "NATS reconnected", "recreated it and republishing"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs do not contain %q:\n%s", want, logs)
		}
	}
}

func TestPublishBatchHonorsContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(b.ctx)
	cancel()
	errs := b.conn.PublishBatch(ctx, []OutMsg{{Data: []byte("x")}})
	if !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", errs[0])
	}
}

func TestPublishBatchReportsStreamProblem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wq := b.cfg.StreamConfig()
	wq.Retention = jetstream.WorkQueuePolicy
	wq.Subjects = []string{b.cfg.Subject + ".elsewhere"}
	if _, err := b.conn.JS.CreateStream(b.ctx, wq); err != nil {
		t.Fatal(err)
	}
	errs := b.conn.PublishBatch(b.ctx, []OutMsg{{Data: []byte("x")}})
	if !errors.Is(errs[0], jetstream.ErrNoStreamResponse) || !errors.Is(errs[0], ErrWorkqueueStream) {
		t.Fatalf("error = %v, want no stream response caused by ErrWorkqueueStream", errs[0])
	}
}

func TestConnectWithAuth(t *testing.T) {
	t.Parallel()
	srv, err := StartEmbedded(EmbeddedOptions{Port: -1, User: "noetl", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)

	connectAndPublish := func(t *testing.T, mutate func(*Config)) error {
		cfg := uniqueConfig(srv.URL())
		mutate(&cfg)
		c, err := Connect(ctx, cfg, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		errs := c.PublishBatch(ctx, []OutMsg{{Data: []byte("x")}})
		return errs[0]
	}
	t.Run("config credentials", func(t *testing.T) {
		t.Parallel()
		if err := connectAndPublish(t, func(c *Config) { c.User, c.Password = "noetl", "s3cret" }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("URL credentials", func(t *testing.T) {
		t.Parallel()
		if err := connectAndPublish(t, func(c *Config) { c.URL = srv.URLWithCredentials() }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("config overrides URL credentials", func(t *testing.T) {
		t.Parallel()
		err := connectAndPublish(t, func(c *Config) {
			c.URL = strings.Replace(srv.URLWithCredentials(), "s3cret", "stale", 1)
			c.User, c.Password = "noetl", "s3cret"
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		err := connectAndPublish(t, func(c *Config) { c.URL = strings.Replace(srv.URLWithCredentials(), "s3cret", "wrong", 1) })
		if err == nil {
			t.Fatal("connected with a wrong password")
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Errorf("error leaks the password: %v", err)
		}
		for _, want := range []string{"authorization", "NATS_URL", strings.TrimPrefix(srv.URL(), "nats://")} {
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
}

// freePort returns a port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestConnectFailsFast(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.URL = "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	start := time.Now()
	_, err := Connect(t.Context(), cfg, nil)
	if err == nil {
		t.Fatal("connected to a port nobody listens on")
	}
	if elapsed := time.Since(start); elapsed > 2*ConnectTimeout {
		t.Errorf("Connect took %v; it should fail fast", elapsed)
	}
	for _, want := range []string{cfg.URL, "NATS_URL", "nats-server -js"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestConnectRequiresJetStream(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	cfg := DefaultConfig()
	cfg.URL = srv.ClientURL()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = Connect(ctx, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "-js") {
		t.Fatalf("Connect = %v, want an error pointing at -js", err)
	}
}

func TestConnectRetryWaitsForServer(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	cfg := uniqueConfig("nats://127.0.0.1:" + strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	logs := &syncBuffer{}
	type result struct {
		c   *Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ConnectRetry(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
		done <- result{c, err}
	}()
	// Start the server only once ConnectRetry has failed at least once.
	wait.Until(t, 10*time.Second, "ConnectRetry to log a retry", func() bool { return strings.Contains(logs.String(), "retrying") })
	srv, err := StartEmbedded(EmbeddedOptions{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.c.Close()

	// A cancelled context ends the retries with the last connect error.
	ctx2, cancel2 := context.WithCancel(t.Context())
	cancel2()
	cfg.URL = "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	if _, err := ConnectRetry(ctx2, cfg, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("ConnectRetry with cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestReport(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rs, err := b.conn.Report(b.ctx, []string{b.cfg.Stream})
	if err != nil || len(rs) != 1 || !strings.Contains(rs[0].Error, "not found") {
		t.Fatalf("Report without stream = %+v, %v; want one report with a not-found error", rs, err)
	}
	cons, err := b.conn.EnsureConsumer(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []OutMsg{{MsgID: "a", Data: []byte("1")}, {MsgID: "b", Data: []byte("2")}, {MsgID: "c", Data: []byte("3")}}
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, msgs))
	// Hold one message unacknowledged.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	// A filtered consumer's num_pending follows new messages
	// asynchronously inside nats-server: wait for it to settle.
	wait.For(t, 10*time.Second, func() error {
		rs, err = b.conn.Report(b.ctx, []string{b.cfg.Stream})
		if err != nil || len(rs) != 1 || len(rs[0].Consumers) != 1 {
			return fmt.Errorf("report %+v, %v", rs, err)
		}
		if c := rs[0].Consumers[0]; c.Unprocessed != 2 {
			return fmt.Errorf("unprocessed %d, want 2", c.Unprocessed)
		}
		return nil
	})
	r := rs[0]
	if r.Error != "" || r.Messages != 3 || r.FirstSeq != 1 || r.LastSeq != 3 || r.Bytes == 0 || r.Storage != "Memory" || r.Replicas != 1 {
		t.Errorf("stream report = %+v", r)
	}
	if len(r.Consumers) != 1 {
		t.Fatalf("consumers = %+v", r.Consumers)
	}
	c := r.Consumers[0]
	if c.Name != b.cfg.Consumer || c.Mode != "Pull" || c.Unprocessed != 2 || c.AckPending != 1 || c.Lag != 3 ||
		c.MaxDeliver != 1000 || c.MaxAckPending != 64 || c.AckWait != 30*time.Second || c.AckFloor != 0 {
		t.Errorf("consumer report = %+v", c)
	}
	if c.UnprocessedPct < 66 || c.UnprocessedPct > 67 {
		t.Errorf("unprocessed = %.2f%%, want 2 of 3", c.UnprocessedPct)
	}
}

func TestEmbeddedRestartKeepsPortAndFileStreams(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ownServer: true, config: func(c *Config) { c.Storage = StorageFile }})
	if _, err := b.conn.EnsureStream(b.ctx); err != nil {
		t.Fatal(err)
	}
	requireNoErrors(t, b.conn.PublishBatch(b.ctx, []OutMsg{{MsgID: "1", Data: []byte("x")}}))
	url := b.srv.URL()
	if err := b.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if b.srv.URL() != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, b.srv.URL())
	}
	// The client reconnects on its own; the file stream kept its message.
	// Each look has a context of its own, not the bundle's 30 s one: on a
	// loaded CI machine the restart alone (file store recovery) has taken
	// most of that.
	wait.For(t, 45*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		s, err := b.conn.JS.Stream(ctx, b.cfg.Stream)
		if err == nil && s.CachedInfo().State.Msgs != 1 {
			err = fmt.Errorf("%d messages, want 1", s.CachedInfo().State.Msgs)
		}
		if err != nil {
			return fmt.Errorf("file stream not back after restart: %w", err)
		}
		return nil
	})
}

func BenchmarkPublishBatch(b *testing.B) {
	cfg := uniqueConfig(sharedServer.URL())
	ctx := b.Context()
	c, err := Connect(ctx, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.EnsureStream(ctx); err != nil {
		b.Fatal(err)
	}
	const batchSize = 100
	msgs := make([]OutMsg, batchSize)
	b.ReportAllocs()
	var event int64
	for b.Loop() {
		for i := range msgs {
			event++
			msgs[i] = c.NotificationMsg(testNotification(1, event, "step"))
		}
		for i, err := range c.PublishBatch(ctx, msgs) {
			if err != nil {
				b.Fatalf("message %d: %v", i, err)
			}
		}
	}
	b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "msgs/s")
}
