package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/bus/bustest"
	"github.com/millrace/millrace/internal/wait"
)

var reportSeq atomic.Int64

// reportStreams are stream, subject and consumer names no other test uses,
// with the flags that point the reports at them.
type reportStreams struct {
	cfg              bus.Config
	query, preAgg    string
	preAggQ, preAggB string
}

func newReportStreams(url string, replicas int) reportStreams {
	n := reportSeq.Add(1)
	cfg := bus.DefaultConfig()
	cfg.URL, cfg.Replicas = url, replicas
	cfg.Stream, cfg.Subject, cfg.Consumer = fmt.Sprintf("R%d_COMMANDS", n), fmt.Sprintf("r%d.commands", n), fmt.Sprintf("r%d_pool", n)
	return reportStreams{cfg: cfg, query: fmt.Sprintf("R%d_QUERIES", n), preAgg: fmt.Sprintf("R%d_PREAGG", n),
		preAggQ: fmt.Sprintf("r%d.preagg.query", n), preAggB: fmt.Sprintf("r%d.preagg.build", n)}
}

func (r reportStreams) args(cmd ...string) []string {
	return append(cmd, "--nats-url", r.cfg.URL, "--nats-stream", r.cfg.Stream, "--query-stream", r.query,
		"--pre-aggregate-stream", r.preAgg)
}

// rowOf returns the table line starting with name.
func rowOf(t *testing.T, out, name string) string {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	t.Fatalf("no row for %s in:\n%s", name, out)
	return ""
}

// The reports against known state: the command stream with acknowledged,
// held, redelivered, undelivered and deleted messages; the pre-aggregate
// stream empty; the query stream missing.
func TestNATSReportsKnownState(t *testing.T) {
	t.Parallel()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	r := newReportStreams(srv.URL(), 1)
	ctx := t.Context()
	conn, err := bus.Connect(ctx, r.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	cons, err := conn.EnsureConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.EnsurePreAggStream(ctx, r.preAgg, r.preAggQ, r.preAggB, "pa-worker", 64); err != nil {
		t.Fatal(err)
	}
	bustest.HoldKnownState(t, conn.JS, r.cfg.Subject, cons)

	code, out, stderr := runCLI(t, r.args("nats", "stream", "report")...)
	if code != 0 {
		t.Fatalf("stream report: exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(out, "Stream ") || strings.Join(strings.Fields(strings.SplitN(out, "\n", 2)[0]), " ") !=
		"Stream Storage Consumers Messages Bytes Lost Deleted Replicas" {
		t.Errorf("stream report header:\n%s", out)
	}
	f := strings.Fields(rowOf(t, out, r.cfg.Stream))
	// Name, Memory, 1 consumer, 4 messages, bytes ("N B"), 0 lost, 1 deleted, 1 replica.
	if len(f) != 9 || f[1] != "Memory" || f[2] != "1" || f[3] != "4" || f[5] != "B" || f[6] != "0" || f[7] != "1" || f[8] != "1" {
		t.Errorf("command stream row %q", f)
	}
	if f := strings.Fields(rowOf(t, out, r.preAgg)); f[2] != "2" || f[3] != "0" {
		t.Errorf("pre-aggregate stream row %q", f)
	}
	if f := strings.Fields(rowOf(t, out, r.query)); f[1] != "missing" {
		t.Errorf("query stream row %q, want missing", f)
	}
	if !strings.Contains(out, r.query+": stream not found") || strings.Contains(out, "NATS_REPLICAS") {
		t.Errorf("notes: want the missing stream only:\n%s", out)
	}

	code, out, stderr = runCLI(t, r.args("nats", "stream", "report", "--json")...)
	if code != 0 {
		t.Fatalf("stream report --json: exit %d: %s", code, stderr)
	}
	var rs []bus.StreamReport
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("stream report --json: %v\n%s", err, out)
	}
	if len(rs) != 3 || rs[0].Name != r.cfg.Stream || rs[1].Name != r.query || rs[2].Name != r.preAgg {
		t.Fatalf("streams %+v, want commands, query, pre-aggregate", rs)
	}
	if s := rs[0]; s.Messages != 4 || s.Deleted != 1 || s.LastSeq != 5 || s.Replicas != 1 || len(s.Consumers) != 1 {
		t.Errorf("command stream %+v", s)
	}
	if c := rs[0].Consumers[0]; c.Name != r.cfg.Consumer || c.AckPending != 2 || c.Redelivered != 1 || c.Unprocessed != 1 ||
		c.UnprocessedPct != 25 || c.AckFloor != 1 || c.Lag != 3 {
		t.Errorf("command consumer %+v", c)
	}
	if !rs[1].Missing {
		t.Errorf("query stream %+v, want missing", rs[1])
	}

	code, out, stderr = runCLI(t, r.args("nats", "consumer", "report")...)
	if code != 0 {
		t.Fatalf("consumer report: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"Consumer report for " + r.cfg.Stream + " with 1 consumers",
		"Consumer report for " + r.query + ": stream not found",
		"Consumer report for " + r.preAgg + " with 2 consumers",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("consumer report lacks %q:\n%s", want, out)
		}
	}
	header := "Consumer Mode Ack Policy Ack Wait Ack Pending Redelivered Unprocessed Ack Floor Cluster"
	if !strings.Contains(out, "\nConsumer ") || !strings.Contains(strings.Join(strings.Fields(out), " "), header) {
		t.Errorf("consumer report header, want %q:\n%s", header, out)
	}
	// Consumer, Pull, Explicit, 30s, 2 ack pending, 1 redelivered, "1 / 25%", ack floor 1; no cluster.
	if got := strings.Join(strings.Fields(rowOf(t, out, r.cfg.Consumer)), " "); got != r.cfg.Consumer+" Pull Explicit 30s 2 1 1 / 25% 1" {
		t.Errorf("consumer row %q", got)
	}
	if got := strings.Join(strings.Fields(rowOf(t, out, "pa-worker-materialization")), " "); got != "pa-worker-materialization Pull Explicit 30s 0 0 0 / 0% 0" {
		t.Errorf("build consumer row %q", got)
	}

	// One stream, as JSON.
	code, out, stderr = runCLI(t, r.args("nats", "consumer", "report", r.preAgg, "--json")...)
	if code != 0 {
		t.Fatalf("consumer report --json: exit %d: %s", code, stderr)
	}
	rs = nil
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 1 || len(rs[0].Consumers) != 2 || rs[0].Consumers[0].Name != "pa-worker" {
		t.Fatalf("consumer report %s --json = %+v, %v", r.preAgg, rs, err)
	}

	// NATS_REPLICAS=3 against these R1 streams: each is pointed out with the remedy.
	code, out, _ = runCLI(t, r.args("nats", "stream", "report", "--nats-replicas", "3")...)
	for _, s := range []string{r.cfg.Stream, r.preAgg} {
		if want := s + " has replicas=1 but NATS_REPLICAS=3"; code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "nats stream edit "+s+" --replicas 3") {
			t.Errorf("exit %d, report lacks %q and its remedy:\n%s", code, want, out)
		}
	}

	// stream info and consumer info still work.
	info := []string{"nats", "consumer", "info", r.cfg.Stream, r.cfg.Consumer, "--nats-url", r.cfg.URL}
	if code, out, stderr := runCLI(t, info...); code != 0 || !strings.Contains(out, "ack_pending 2") || !strings.Contains(out, "replicas 1") {
		t.Errorf("consumer info: exit %d\n%s%s", code, out, stderr)
	}
}

// On a 3-node cluster the reports name every peer, the leader marked *.
func TestNATSReportOnCluster(t *testing.T) {
	t.Parallel()
	cl := bustest.StartCluster(t, 3)
	r := newReportStreams(cl.URL(), 3)
	conn, err := bus.Connect(t.Context(), r.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if _, err := conn.EnsureConsumer(t.Context()); err != nil {
		t.Fatal(err)
	}
	var out string
	wait.For(t, 30*time.Second, func() error {
		code, stdout, stderr := runCLI(t, r.args("nats", "stream", "report", "--nats-replicas", "3")...)
		out = stdout
		leader := cl.StreamLeader(r.cfg.Stream)
		if code != 0 || leader == nil {
			return fmt.Errorf("exit %d, leader %v: %s", code, leader, stderr)
		}
		row := rowOf(t, stdout, r.cfg.Stream)
		if !strings.Contains(row, leader.Name()+"*") || strings.Count(row, ", ") != 2 || strings.Contains(row, "!") {
			return fmt.Errorf("row %q, want three current peers with the leader %s marked", row, leader.Name())
		}
		return nil
	})
	if strings.Contains(out, "NATS_REPLICAS") {
		t.Errorf("R3 streams with NATS_REPLICAS=3 reported as a mismatch:\n%s", out)
	}
	code, out, stderr := runCLI(t, r.args("nats", "consumer", "report", r.cfg.Stream)...)
	if row := rowOf(t, out, r.cfg.Consumer); code != 0 || !strings.Contains(row, "*") || strings.Count(row, ", ") != 2 {
		t.Errorf("consumer report: exit %d, row %q\n%s", code, row, stderr)
	}
}
