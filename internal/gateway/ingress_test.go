package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/wait"
)

const hookPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: hook
  path: test/hook
workflow:
  - step: start
    tool:
      kind: shell
      cmds: ["echo order {{ workload.payload.order }}"]
`

// writeIngress writes a listener file whose secret lives in an environment
// variable of the test's own (unique, so parallel tests do not collide).
func writeIngress(t *testing.T, name, playbook, secret string) string {
	t.Helper()
	env := fmt.Sprintf("MILLRACE_TEST_HOOK_SECRET_%d", testSeq.Add(1))
	os.Setenv(env, secret)
	t.Cleanup(func() { os.Unsetenv(env) })
	f := filepath.Join(t.TempDir(), "ingress.yaml")
	doc := fmt.Sprintf("ingress:\n  - name: %s\n    playbook: %s\n    secret_env: %s\n", name, playbook, env)
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// A signed webhook starts its playbook with the body as workload.payload
// and answers 202 with the execution id; a bad or missing signature is
// 401, an unknown listener 404, a body that is not JSON 400, one too big 413.
func TestIngress(t *testing.T) {
	t.Parallel()
	h := authServer(t)
	admin := client.New(h.Srv.URL()).WithToken(h.Token(t, api.RoleAdmin))
	if _, err := admin.Register(t.Context(), hookPlaybook); err != nil {
		t.Fatal(err)
	}
	h.API = admin
	secret := []byte("s3cret-for-the-hook")
	cfg := testConfig(t, h.Srv.URL(), h.NATS.URL())
	cfg.IngressFile = writeIngress(t, "orders", "test/hook", string(secret))
	cfg.Token = h.Token(t, api.RoleOperator)
	cfg.MaxBodyBytes = 1024
	_, gw := startGateway(t, cfg)
	url := gw.URL + "/ingress/orders"

	body := `{"order": 4711}`
	r := do(t, "POST", url, body, map[string]string{SignatureHeader: Sign(secret, []byte(body)), "Content-Type": "application/json"})
	if r.status != 202 {
		t.Fatalf("signed webhook: %d %s", r.status, r.body)
	}
	var started struct {
		ExecutionID int64 `json:"execution_id"`
	}
	if err := json.Unmarshal(r.body, &started); err != nil || started.ExecutionID == 0 {
		t.Fatalf("reply %s: %v", r.body, err)
	}
	// The command's rendered tool shows the payload reached the workload.
	wait.For(t, 30*time.Second, func() error {
		evs, err := h.API.Events(t.Context(), started.ExecutionID)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.EventType != api.EvCommandIssued {
				continue
			}
			c, err := h.API.Command(t.Context(), e.EventID)
			if err != nil {
				return err
			}
			if !strings.Contains(string(c.Tool), "echo order 4711") {
				return fmt.Errorf("command tool %s lacks the payload", c.Tool)
			}
			return nil
		}
		return fmt.Errorf("no command issued yet in %d events", len(evs))
	})

	for _, c := range []struct {
		name, url, body, sig string
		status               int
		code                 apierr.Code
	}{
		{"wrong signature", url, body, Sign([]byte("other"), []byte(body)), 401, apierr.Unauthenticated},
		{"signature of another body", url, body, Sign(secret, []byte(`{"order": 1}`)), 401, apierr.Unauthenticated},
		{"no signature", url, body, "", 401, apierr.Unauthenticated},
		{"not hex", url, body, "sha256=zz", 401, apierr.Unauthenticated},
		{"no sha256= prefix", url, body, strings.TrimPrefix(Sign(secret, []byte(body)), "sha256="), 401, apierr.Unauthenticated},
		{"unknown listener", gw.URL + "/ingress/nope", body, Sign(secret, []byte(body)), 404, apierr.NotFound},
		{"not JSON", url, "order=1", Sign(secret, []byte("order=1")), 400, apierr.BadJSON},
		{"too big", url, strings.Repeat("x", 2048), Sign(secret, []byte(strings.Repeat("x", 2048))), 413, apierr.TooLarge},
	} {
		hdr := map[string]string{}
		if c.sig != "" {
			hdr[SignatureHeader] = c.sig
		}
		r := do(t, "POST", c.url, c.body, hdr)
		if r.status != c.status || r.errCode() != c.code {
			t.Errorf("%s: %d %q, want %d %q: %s", c.name, r.status, r.errCode(), c.status, c.code, r.body)
		}
	}

	// A gateway whose own token may not execute: the sender is told the
	// gateway is at fault (502), not that its signature was wrong.
	cfg = testConfig(t, h.Srv.URL(), h.NATS.URL())
	cfg.IngressFile = writeIngress(t, "orders", "test/hook", string(secret))
	cfg.Token = h.Token(t, api.RoleViewer)
	_, viewerGW := startGateway(t, cfg)
	r = do(t, "POST", viewerGW.URL+"/ingress/orders", body, map[string]string{SignatureHeader: Sign(secret, []byte(body))})
	if r.status != 502 || r.errCode() != apierr.UpstreamUnavailable || !strings.Contains(string(r.body), "MILLRACE_GATEWAY_TOKEN") {
		t.Errorf("ingress with a viewer's gateway token: %d %s", r.status, r.body)
	}
}

// Listener files are checked at start: every mistake names what to fix.
func TestIngressFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(doc string) string {
		f := filepath.Join(dir, fmt.Sprintf("i%d.yaml", testSeq.Add(1)))
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	env := fmt.Sprintf("MILLRACE_TEST_HOOK_SECRET_%d", testSeq.Add(1))
	os.Setenv(env, "x")
	t.Cleanup(func() { os.Unsetenv(env) })
	for _, c := range []struct {
		doc, token, want string
	}{
		{"ingress:\n  - {name: a, playbook: p, secret_env: " + env + "}\n", "", "MILLRACE_GATEWAY_TOKEN is empty"},
		{"ingress:\n  - {name: a, playbook: p, secret_env: MILLRACE_TEST_UNSET_XYZ}\n", "t", "MILLRACE_TEST_UNSET_XYZ"},
		{"ingress:\n  - {name: a, secret_env: " + env + "}\n", "t", "playbook is required"},
		{"ingress:\n  - {name: 'a/b', playbook: p, secret_env: " + env + "}\n", "t", "without /"},
		{"ingress:\n  - {name: a, playbook: p, secret_env: " + env + "}\n  - {name: a, playbook: q, secret_env: " + env + "}\n", "t", "appears twice"},
		{"ingress:\n  - {name: a, playbook: p, secret: x}\n", "t", "secret"},
	} {
		_, err := loadIngress(write(c.doc), c.token)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to mention %q", c.doc, err, c.want)
		}
	}
	if _, err := loadIngress(filepath.Join(dir, "missing.yaml"), "t"); err == nil {
		t.Error("a missing file was accepted")
	}
	l, err := loadIngress(write(`{"ingress": [{"name": "j", "playbook": "p", "secret_env": "`+env+`"}]}`), "t")
	if err != nil || string(l["j"].secret) != "x" {
		t.Errorf("JSON file: %v %+v", err, l)
	}
}
