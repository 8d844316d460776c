package bus

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/bus/bustest"
	"github.com/millrace/millrace/internal/wait"
)

// A stream with every kind of message: acknowledged, held unacknowledged,
// redelivered, never delivered and deleted. Its report has each figure
// `nats stream report` and `nats consumer report` show.
func TestReportKnownState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rs, err := b.conn.Report(b.ctx, []string{b.cfg.Stream})
	if err != nil || len(rs) != 1 || !rs[0].Missing || rs[0].Error == "" {
		t.Fatalf("Report without stream = %+v, %v; want it missing", rs, err)
	}
	cons, err := b.conn.EnsureConsumer(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	bustest.HoldKnownState(t, b.conn.JS, b.cfg.Subject, cons)

	rs, err = b.conn.Report(b.ctx, []string{b.cfg.Stream, "NO_SUCH_STREAM"})
	if err != nil || len(rs) != 2 {
		t.Fatal(rs, err)
	}
	if !rs[1].Missing || rs[1].Name != "NO_SUCH_STREAM" {
		t.Errorf("missing stream reported as %+v", rs[1])
	}
	r := rs[0]
	if r.Error != "" || r.Missing || r.Messages != 4 || r.Deleted != 1 || r.FirstSeq != 1 || r.LastSeq != 5 ||
		r.Bytes == 0 || r.Lost != 0 || r.Storage != "Memory" || r.Replicas != 1 || r.Cluster.Clustered() {
		t.Errorf("stream report = %+v", r)
	}
	if len(r.Consumers) != 1 {
		t.Fatalf("consumers = %+v", r.Consumers)
	}
	c := r.Consumers[0]
	if c.Stream != b.cfg.Stream || c.Name != b.cfg.Consumer || c.Mode != "Pull" || c.AckPolicy != "AckExplicit" ||
		c.AckPending != 2 || c.Redelivered != 1 || c.Unprocessed != 1 || c.AckFloor != 1 || c.Lag != 3 || c.Waiting != 0 {
		t.Errorf("consumer report = %+v", c)
	}
	if c.UnprocessedPct != 25 {
		t.Errorf("unprocessed = %.2f%%, want 1 of 4 messages", c.UnprocessedPct)
	}
}

func TestPeersString(t *testing.T) {
	t.Parallel()
	var none *Peers
	if none.String() != "" || none.Clustered() {
		t.Errorf("nil peers render as %q", none.String())
	}
	single := &Peers{Leader: "millrace-embedded"}
	if single.Clustered() {
		t.Error("a single server's placement counts as clustered")
	}
	p := &Peers{Name: "c", Leader: "n2", Replicas: []Peer{
		{Name: "n3", Current: true}, {Name: "n1", Current: false}, {Name: "n4", Current: true, Offline: true}}}
	if got, want := p.String(), "n1!, n2*, n3, n4!"; got != want || !p.Clustered() {
		t.Errorf("peers = %q, want %q", got, want)
	}
}

// On a 3-node cluster, NATS_REPLICAS=3 makes every stream and bucket
// Millrace creates R3, and the report names the leader; an existing R1
// stream is used unchanged, with a warning naming both counts.
func TestReplicasOnCluster(t *testing.T) {
	t.Parallel()
	cl := bustest.StartCluster(t, 3)
	logs := &syncBuffer{}
	cfg := uniqueConfig(cl.URL())
	cfg.Replicas = 3
	ctx := t.Context()
	conn, err := Connect(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)

	if _, err := conn.EnsureConsumer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.EnsureQueryStream(ctx, "Q_JOBS", "q.jobs", "q-worker", 64); err != nil {
		t.Fatal(err)
	}
	if err := conn.EnsurePreAggStream(ctx, "P_JOBS", "p.query", "p.build", "p-worker", 64); err != nil {
		t.Fatal(err)
	}
	if n := conn.KeyValueReplicas(ctx, "new_bucket"); n != 3 {
		t.Errorf("replicas for a new KV bucket = %d, want 3", n)
	}
	if n := conn.ObjectStoreReplicas(ctx, "new_objects"); n != 3 {
		t.Errorf("replicas for a new object store = %d, want 3", n)
	}
	streams := []string{cfg.Stream, "Q_JOBS", "P_JOBS"}
	wait.For(t, 30*time.Second, func() error {
		rs, err := conn.Report(ctx, streams)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Error != "" || r.Replicas != 3 || !r.Cluster.Clustered() {
				return fmt.Errorf("stream report %+v, want R3 on the cluster", r)
			}
			leader := cl.StreamLeader(r.Name)
			if leader == nil || r.Cluster.Leader != leader.Name() || len(r.Cluster.Replicas) != 2 {
				return fmt.Errorf("%s: cluster %+v, leader %v", r.Name, r.Cluster, leader)
			}
			if peers := r.Cluster.String(); !strings.Contains(peers, leader.Name()+"*") || strings.Count(peers, ",") != 2 {
				return fmt.Errorf("%s: peers rendered %q, want three with the leader %s marked", r.Name, peers, leader.Name())
			}
			if r.Name == cfg.Stream && (len(r.Consumers) != 1 || !r.Consumers[0].Cluster.Clustered() || r.Consumers[0].Cluster.Leader == "") {
				return fmt.Errorf("consumers %+v, want one with a leader", r.Consumers)
			}
		}
		if strings.Contains(logs.String(), "different replica count") {
			return fmt.Errorf("warned about replicas on streams it created:\n%s", logs)
		}
		return nil
	})

	// An R1 stream made before NATS_REPLICAS was raised to 3.
	old := uniqueConfig(cl.URL())
	if _, err := conn.JS.CreateStream(ctx, old.StreamConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "old_bucket"}); err != nil {
		t.Fatal(err)
	}
	raised := old
	raised.Replicas = 3
	conn3, err := Connect(ctx, raised, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn3.Close)
	st, err := conn3.EnsureStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().Config.Replicas; n != 1 {
		t.Errorf("existing R1 stream now has %d replicas; it must be used unchanged", n)
	}
	if n := conn3.KeyValueReplicas(ctx, "old_bucket"); n != 1 {
		t.Errorf("replicas for an existing R1 KV bucket = %d, want its own 1", n)
	}
	for _, want := range []string{
		"stream=" + old.Stream + " replicas=1 configured=3",
		"nats stream edit " + old.Stream + " --replicas 3",
		"stream=KV_old_bucket replicas=1 configured=3",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	rs, err := conn3.Report(ctx, []string{old.Stream})
	if err != nil {
		t.Fatal(err)
	}
	if r := rs[0]; r.Replicas != 1 || !r.Cluster.Clustered() || len(r.Cluster.Replicas) != 0 || r.Cluster.String() != r.Cluster.Leader+"*" {
		t.Errorf("report of the R1 stream = %+v (cluster %+v), want 1 replica: its leader only", r, r.Cluster)
	}
}

// NATS_REPLICAS=3 against a single server fails saying what to set.
func TestReplicasOnSingleServer(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{config: func(c *Config) { c.Replicas = 3 }})
	_, err := b.conn.EnsureStream(b.ctx)
	if err == nil || !strings.Contains(err.Error(), "NATS_REPLICAS=3 needs a NATS cluster: set NATS_REPLICAS=1") {
		t.Errorf("EnsureStream with 3 replicas on one server = %v, want the remedy", err)
	}
	err = b.conn.EnsureQueryStream(b.ctx, b.cfg.Stream+"_Q", b.cfg.Subject+"q", "q", 64)
	if err == nil || !strings.Contains(err.Error(), "set NATS_REPLICAS=1") {
		t.Errorf("EnsureQueryStream with 3 replicas on one server = %v, want the remedy", err)
	}
}
