package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/wait"
)

// gated's one step runs until the file named by gate exists, so a test
// decides when the commands it holds end.
const gated = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: gated
  path: e2e/gated
workload:
  gate: /nonexistent
workflow:
  - step: start
    tool:
      kind: shell
      cmds:
        - "while [ ! -e {{ gate }} ]; do sleep 0.05; done; echo {{ execution_id }}"
`

// gate is a file whose creation lets gated's commands end.
type gate string

func newGate(t *testing.T) gate { return gate(filepath.Join(t.TempDir(), "open")) }

func (g gate) payload(int) map[string]any { return map[string]any{"gate": string(g)} }

func (g gate) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(string(g), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startedCommands counts the distinct commands of ids that have started:
// a command re-claimed after its lease lapsed (a slow host) counts once.
func (c *cluster) startedCommands(ids []int64) int {
	c.t.Helper()
	seen := map[string]bool{}
	for _, id := range ids {
		for _, e := range c.events(id) {
			if e.EventType == api.EvCommandStarted {
				seen[e.CommandID] = true
			}
		}
	}
	return len(seen)
}

// commandConsumer reads the cluster's command consumer from NATS.
func (c *cluster) commandConsumer() (*jetstream.ConsumerInfo, error) {
	nc, err := nats.Connect(c.nats.URL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, c.envOf("NATS_STREAM"), c.envOf("NATS_CONSUMER"))
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

// With ack on claim a running command no longer holds a notification
// unacknowledged: the pool's max_ack_pending (4 here) caps only
// notifications not yet claimed, and 12 commands run at once on 16 slots.
// With ack on completion the same pool runs 4, and the other notifications
// wait in the stream while the worker has free slots.
func TestAckPointAndMaxAckPending(t *testing.T) {
	t.Parallel()
	const maxAckPending, executions, slots = 4, 12, 16
	for _, mode := range []string{"claim", "completion"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			// A lease long enough that a slow host's late heartbeat never
			// lets the reaper re-notify a running command meanwhile.
			c := newCluster(t, clusterOpts{lease: "10"})
			c.env = append(c.env, fmt.Sprint("NOETL_WORKER_NATS_MAX_ACK_PENDING=", maxAckPending), "MILLRACE_WORKER_ACK="+mode)
			c.startServer()
			w := c.startWorker(slots)
			g := newGate(t)
			reg := c.register(gated)
			ids := c.executeMany(reg.Path, executions, g.payload)
			running := executions
			if mode == "completion" {
				running = maxAckPending
			}
			wait.For(t, 60*time.Second, func() error {
				if started := c.startedCommands(ids); started != running {
					return fmt.Errorf("%d commands started, want %d", started, running)
				}
				ci, err := c.commandConsumer()
				if err != nil {
					return err
				}
				if mode == "claim" && (ci.NumAckPending != 0 || ci.NumPending != 0) {
					return fmt.Errorf("consumer: %d unacknowledged, %d undelivered with every command claimed and running; want 0 and 0", ci.NumAckPending, ci.NumPending)
				}
				// The reaper may add re-notifications of the waiting
				// commands, never fewer than the ones that wait.
				if mode == "completion" && (ci.NumAckPending != maxAckPending || ci.NumPending < executions-maxAckPending) {
					return fmt.Errorf("consumer: %d unacknowledged (want %d), %d undelivered (want at least %d)", ci.NumAckPending, maxAckPending, ci.NumPending, executions-maxAckPending)
				}
				return nil
			})
			if n := c.countEvents(ids, api.EvCommandCompleted); n != 0 {
				t.Fatalf("%d commands completed before the gate opened", n)
			}
			if !strings.Contains(w.Output(), "ack_on="+mode) {
				t.Errorf("the worker does not log its ack point (ack_on=%s):\n%s", mode, w.Output())
			}
			g.open(t)
			c.waitAll(ids, 90*time.Second)
			c.checkExactlyOnce(ids, map[string]bool{"start": true})
		})
	}
}

// A worker acking on claim is SIGKILLed while it runs commands: NATS holds
// nothing of them (every notification was acknowledged at the claim), so
// only their leases bring them back. The leases expire, the reaper
// re-notifies, another worker runs each one again: every execution
// completes, each command exactly once (0 lost, 0 doubled), every one as a
// later attempt.
func TestWorkerKilledAfterAckOnClaim(t *testing.T) {
	t.Parallel()
	const executions = 20
	c := newCluster(t, clusterOpts{lease: "2"})
	c.env = append(c.env, "MILLRACE_WORKER_ACK=claim")
	c.startServer()
	victim := c.startWorker(50)
	g := newGate(t)
	reg := c.register(gated)
	ids := c.executeMany(reg.Path, executions, g.payload)
	wait.For(t, 60*time.Second, func() error {
		if started := c.startedCommands(ids); started != executions {
			return fmt.Errorf("%d of %d commands started", started, executions)
		}
		ci, err := c.commandConsumer()
		if err != nil {
			return err
		}
		if ci.NumAckPending != 0 || ci.NumPending != 0 {
			return fmt.Errorf("consumer: %d unacknowledged, %d undelivered; want 0 and 0 once every command is claimed", ci.NumAckPending, ci.NumPending)
		}
		return nil
	})
	victim.Signal(syscall.SIGKILL)
	_ = victim.Wait(t, 10*time.Second)
	// The victim's shells outlive it; the gate lets them (and the re-runs)
	// end. Their output goes nowhere: the victim cannot report.
	g.open(t)
	c.startWorker(50)
	c.waitAll(ids, 90*time.Second)
	c.checkExactlyOnce(ids, map[string]bool{"start": true})
	for _, id := range ids {
		for _, e := range c.events(id) {
			if e.EventType == api.EvCommandCompleted && e.Attempt < 2 {
				t.Fatalf("execution %d: command %s completed as attempt %d; every command was running on the killed worker, so want a later attempt", id, e.CommandID, e.Attempt)
			}
		}
	}
}

// MILLRACE_WORKER_ACK is checked before a worker contacts anything, and
// dev mode hands the setting to its in-process workers.
func TestWorkerAckSetting(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{db: "none"})
	if help, code := c.runCLI("worker", "--help"); code != 0 || !strings.Contains(help, "MILLRACE_WORKER_ACK") || !strings.Contains(help, "always acknowledge on completion") {
		t.Fatalf("worker --help (exit %d) should describe MILLRACE_WORKER_ACK and that warehouse and pre-aggregate workers ack on completion:\n%s", code, help)
	}
	bad := c.startEnv("worker-bad-ack", []string{"MILLRACE_WORKER_ACK=done"}, "worker")
	if err := bad.Wait(t, 30*time.Second); err == nil || !strings.Contains(bad.Output(), "MILLRACE_WORKER_ACK") || !strings.Contains(bad.Output(), "claim or completion") {
		t.Fatalf("a worker with MILLRACE_WORKER_ACK=done exited with %v; want a failure naming the variable and its values:\n%s", err, bad.Output())
	}
	addr := proctest.FreeAddr(t)
	dev := c.start("dev", "dev", "--data-dir", t.TempDir(), "--addr", addr, "--workers", "2", "--ack", "completion")
	c.url = "http://" + addr
	c.api = client.New(c.url)
	c.waitHealthy(dev)
	wait.For(t, 30*time.Second, func() error {
		if n := strings.Count(dev.Output(), "ack_on=completion"); n != 2 {
			return fmt.Errorf("%d of dev's 2 workers started with ack_on=completion", n)
		}
		return nil
	})
	dev.Signal(syscall.SIGTERM)
	checkCleanExit(t, dev, 30*time.Second)
}
