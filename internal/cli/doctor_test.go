package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/wait"
)

const doctorPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: waits, path: doctor/waits}
workflow:
  - step: start
    tool: {kind: noop}
`

// doctor through the CLI: content on an idle server; with a command
// waiting on the stream and no worker online, a no_workers error with its
// hint, the lag line, exit 1; --json prints the report.
func TestDoctorReadsOps(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, nil)
	url := h.Srv.URL()

	code, out, stderr := runCLI(t, "doctor", "--server", url)
	if code != 0 || !strings.Contains(out, "outbox   0 rows, oldest due -") || !strings.Contains(out, "workers  commands: 0 online (default 0), 0/0 slots busy") ||
		!strings.Contains(out, "clock    server - database ") || !strings.Contains(out, "all good") {
		t.Fatalf("doctor on an idle server: exit %d\n%s%s", code, out, stderr)
	}

	if _, err := h.API.Register(t.Context(), doctorPlaybook); err != nil {
		t.Fatal(err)
	}
	if _, err := h.API.Execute(t.Context(), "doctor/waits", 0, nil); err != nil {
		t.Fatal(err)
	}
	lag := fmt.Sprintf("lag      %s/%s 1 (unprocessed 1,", h.Cfg.NATS.Stream, h.Cfg.NATS.Consumer)
	wait.For(t, 10*time.Second, func() error {
		code, out, stderr = runCLI(t, "doctor", "--server", url)
		if code != 1 || !strings.Contains(out, lag) {
			return fmt.Errorf("exit %d\n%s%s", code, out, stderr)
		}
		return nil
	})
	if !strings.Contains(out, "PROBLEM  [error] no_workers: 1 messages wait on "+h.Cfg.NATS.Stream) ||
		!strings.Contains(out, "hint: start `millrace worker --stream commands`") || !strings.Contains(out, "commands 1 unclaimed") {
		t.Fatalf("doctor with work and no worker:\n%s", out)
	}

	code, out, stderr = runCLI(t, "doctor", "--server", url, "--json")
	var rep doctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s%s", err, out, stderr)
	}
	if code != 1 || rep.Ops == nil || rep.Health.Status != "ok" || rep.CLIClockSkewSeconds == nil || len(rep.Ops.NATS.Streams) != 1 {
		t.Fatalf("doctor --json: exit %d, %+v", code, rep)
	}
	var found bool
	for _, p := range rep.Problems {
		found = found || (p.Code == api.ProblemNoWorkers && p.Severity == api.SeverityError && p.Hint != "")
	}
	if !found {
		t.Fatalf("doctor --json problems = %+v, want no_workers", rep.Problems)
	}
}

// A routed pool's consumer line names its pool: the no_workers problem
// is per pool, so the lag lines say which pool each belongs to.
func TestDoctorNamesConsumerPool(t *testing.T) {
	t.Parallel()
	ops := api.OpsReport{NATS: api.OpsNATS{Connected: true, Streams: []api.OpsStream{{Name: "NOETL_COMMANDS", Kind: "commands",
		Consumers: []api.OpsConsumer{{Name: "noetl_worker_pool", Lag: 1}, {Name: "noetl_worker_pool_gpu", Pool: "gpu", Lag: 2}}}}}}
	var b strings.Builder
	printOps(&b, doctorReport{Ops: &ops})
	for _, want := range []string{"lag      NOETL_COMMANDS/noetl_worker_pool 1 (", "lag      NOETL_COMMANDS/noetl_worker_pool_gpu pool gpu 2 ("} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, b.String())
		}
	}
}
