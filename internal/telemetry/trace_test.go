package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker/commands"
)

const oneStep = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: traced, path: t/traced}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["echo traced"]}
`

// stack is a server and a commands worker in this process, each tracing
// with tel (its service name aside).
type stack struct {
	h          *servertest.Harness
	stopWorker func()
}

func startStack(t *testing.T, tel config.Telemetry) *stack {
	t.Helper()
	h := servertest.Start(t, func(c *config.Server) {
		c.Telemetry = tel
		c.Telemetry.ServiceName = "millrace-server"
	})
	wt := tel
	wt.ServiceName = "millrace-worker"
	w, err := commands.New(t.Context(), config.Worker{NATS: h.Cfg.NATS, ServerURL: h.Srv.URL(), WorkerID: "w-" + h.Cfg.NATS.Consumer,
		Concurrency: 2, ShutdownGrace: 5 * time.Second, Telemetry: wt}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return &stack{h: h, stopWorker: stop}
}

// execute runs the one-step playbook to its end.
func (s *stack) execute(t *testing.T) api.Execution {
	t.Helper()
	ctx := t.Context()
	reg, err := s.h.API.Register(ctx, oneStep)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.h.API.Execute(ctx, reg.Path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ex api.Execution
	wait.For(t, 30*time.Second, func() error {
		if ex, err = s.h.API.Execution(ctx, st.ExecutionID); err != nil {
			return err
		}
		if ex.Status == api.ExecRunning {
			return errors.New("execution still running")
		}
		return nil
	})
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %d %s: %s", ex.ExecutionID, ex.Status, ex.Error)
	}
	return ex
}

// One command, from the API request through the outbox, NATS, the worker,
// the tool and the report, is one trace spanning both services, each hop
// the child of the one before.
func TestOneTraceSpansServerAndWorker(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	s := startStack(t, config.Telemetry{Exporter: "otlp", Endpoint: rc.URL, Protocol: "http/protobuf", Sampler: "parentbased_always_on"})
	s.execute(t)
	s.stopWorker() // exports the worker's spans; the server's go out on its batch timer

	subject := s.h.Cfg.NATS.Subject
	// want lists each span of the trace: service, name, and the service
	// and name of its parent ("" for the root).
	want := []struct{ service, name, parentService, parent string }{
		{"millrace-server", "POST /api/execute", "", ""},
		{"millrace-server", "publish " + subject, "millrace-server", "POST /api/execute"},
		{"millrace-worker", "worker commands start", "millrace-server", "publish " + subject},
		{"millrace-worker", "claim", "millrace-worker", "worker commands start"},
		{"millrace-worker", "POST /api/commands/claim", "millrace-worker", "claim"},
		{"millrace-server", "POST /api/commands/claim", "millrace-worker", "POST /api/commands/claim"},
		{"millrace-worker", "tool shell", "millrace-worker", "worker commands start"},
		{"millrace-worker", "report", "millrace-worker", "worker commands start"},
		{"millrace-worker", "POST /api/events/batch", "millrace-worker", "report"},
		{"millrace-server", "POST /api/events/batch", "millrace-worker", "POST /api/events/batch"},
	}
	var spans []span
	wait.For(t, 30*time.Second, func() error {
		spans, _ = rc.snapshot()
		root := find(spans, "", "millrace-server", "POST /api/execute")
		if root == nil {
			return errors.New("no span POST /api/execute from millrace-server yet")
		}
		for _, w := range want {
			if find(spans, root.Trace, w.service, w.name) == nil {
				return fmt.Errorf("no span %q from %s in trace %s yet", w.name, w.service, root.Trace)
			}
		}
		return nil
	})
	trace := find(spans, "", "millrace-server", "POST /api/execute").Trace
	for _, w := range want {
		sp := find(spans, trace, w.service, w.name)
		if w.parent == "" {
			if sp.Parent != "" {
				t.Errorf("%s %q has parent %s, want a root span", w.service, w.name, sp.Parent)
			}
			continue
		}
		parent := find(spans, trace, w.parentService, w.parent)
		if sp.Parent != parent.ID {
			t.Errorf("%s %q: parent span %s, want %s %q (%s)\nspans of the trace:\n%s", w.service, w.name, sp.Parent, w.parentService, w.parent, parent.ID, dump(spans, trace))
		}
	}
	if t.Failed() {
		return
	}
	// Nothing of the command escaped into another trace.
	for _, sp := range spans {
		if sp.Trace != trace && (strings.HasPrefix(sp.Name, "worker ") || strings.HasPrefix(sp.Name, "publish ")) {
			t.Errorf("%s %q is in trace %s, not the execution's %s", sp.Service, sp.Name, sp.Trace, trace)
		}
	}
}

// Tracing is off without an endpoint, and with OTEL_TRACES_EXPORTER=none
// even with one: nothing reaches the collector.
func TestNothingExportedWhenOff(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	s := startStack(t, config.Telemetry{Exporter: "none", Endpoint: rc.URL, Protocol: "http/protobuf"})
	s.execute(t)
	s.stopWorker() // a worker that traced would export here, before Run returns
	s.h.Srv.Close()
	if spans, n := rc.snapshot(); n > 0 {
		t.Fatalf("the collector got %d exports (%d spans) with OTEL_TRACES_EXPORTER=none", n, len(spans))
	}
}

func find(spans []span, trace, service, name string) *span {
	for i, s := range spans {
		if (trace == "" || s.Trace == trace) && s.Service == service && s.Name == name {
			return &spans[i]
		}
	}
	return nil
}

func dump(spans []span, trace string) string {
	var b strings.Builder
	for _, s := range spans {
		if s.Trace == trace {
			fmt.Fprintf(&b, "  %s %s %q id %s parent %s\n", s.Service, s.Kind, s.Name, s.ID, s.Parent)
		}
	}
	return b.String()
}
