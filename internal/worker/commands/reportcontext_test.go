package commands_test

import (
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
)

const bigContext = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: bigctx, path: w/bigctx}
workflow:
  - step: start
    tool:
      - name: fetch
        kind: shell
        cmds: ["head -c 100000 /dev/zero | tr '\\0' x"]
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'success' }}"
                then: {do: continue, set: {ctx.big: "{{ output.data.stdout }}"}}
`

// A report the server refuses for its size fails the command, also when
// what is too large is the task list's context: the failure is sent
// without it (it was re-sent with it, refused again, and the command ran
// over and over).
func TestOversizedContextFailsTheCommand(t *testing.T) {
	t.Parallel()
	t.Run("server refuses", func(t *testing.T) {
		t.Parallel()
		oversizedContext(t, 64<<10, 0, "refused")
	})
	// Over the worker's own bound, the report is not even sent with it.
	t.Run("worker bound", func(t *testing.T) {
		t.Parallel()
		oversizedContext(t, 0, 50_000, "MILLRACE_MAX_RESULT_BYTES")
	})
}

func oversizedContext(t *testing.T, maxBody, maxResult int, wantErr string) {
	h := servertest.Start(t, func(c *config.Server) {
		if maxBody > 0 {
			c.MaxBodyBytes = maxBody
		}
		c.LeaseTTL, c.ReapInterval = 2*time.Second, 200*time.Millisecond
	})
	logs := &syncBuf{}
	runWorker(t, config.Worker{NATS: h.Cfg.NATS, ServerURL: h.Srv.URL(), WorkerID: "w-" + h.Cfg.NATS.Consumer,
		Concurrency: 2, ShutdownGrace: 5 * time.Second, MaxResultBytes: maxResult}, logs)
	b := &bundle{t: t, Harness: h, api: h.API, logs: logs}
	ex := b.run(bigContext, nil)
	if ex.Status != api.ExecFailed || !strings.Contains(ex.Error, wantErr) {
		t.Fatalf("execution %s: %q, want failed naming %q", ex.Status, ex.Error, wantErr)
	}
	if len(ex.Context) > 0 && string(ex.Context) != "null" {
		t.Fatalf("context = %.80s, want none", ex.Context)
	}
}
