package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
)

// SignatureHeader carries a webhook's signature: sha256=<hex HMAC-SHA256(secret, body)>.
const SignatureHeader = "X-Millrace-Signature"

// listener is one webhook of MILLRACE_INGRESS_FILE.
type listener struct {
	Name      string `yaml:"name" json:"name"`
	Playbook  string `yaml:"playbook" json:"playbook"`
	SecretEnv string `yaml:"secret_env" json:"secret_env"`
	secret    []byte
}

// loadIngress reads the listeners of file (YAML or JSON: JSON is YAML);
// every listener's secret comes from the environment variable it names.
func loadIngress(file, token string) (map[string]listener, error) {
	if file == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("MILLRACE_INGRESS_FILE: %w", err)
	}
	var doc struct {
		Ingress []listener `yaml:"ingress"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, fmt.Errorf("MILLRACE_INGRESS_FILE %s: %w; want ingress: [{name, playbook, secret_env}]", file, err)
	}
	if len(doc.Ingress) > 0 && token == "" {
		return nil, fmt.Errorf("MILLRACE_INGRESS_FILE %s has listeners but MILLRACE_GATEWAY_TOKEN is empty: webhooks start playbooks with that token; make one with: millrace token create --role operator --name gateway", file)
	}
	out := make(map[string]listener, len(doc.Ingress))
	for i, l := range doc.Ingress {
		where := fmt.Sprintf("MILLRACE_INGRESS_FILE %s: ingress[%d]", file, i)
		switch {
		case l.Name == "" || strings.ContainsAny(l.Name, "/ "):
			return nil, fmt.Errorf("%s: name %q must be non-empty, without / or spaces (it is the path: POST /ingress/NAME)", where, l.Name)
		case l.Playbook == "":
			return nil, fmt.Errorf("%s (%s): playbook is required: the catalog path to start", where, l.Name)
		case l.SecretEnv == "":
			return nil, fmt.Errorf("%s (%s): secret_env is required: the environment variable holding the HMAC secret", where, l.Name)
		}
		if _, dup := out[l.Name]; dup {
			return nil, fmt.Errorf("%s: name %q appears twice", where, l.Name)
		}
		s := os.Getenv(l.SecretEnv)
		if s == "" {
			return nil, fmt.Errorf("%s (%s): environment variable %s (secret_env) is empty; set it to the webhook's shared secret", where, l.Name, l.SecretEnv)
		}
		l.secret = []byte(s)
		out[l.Name] = l
	}
	return out, nil
}

func (g *Gateway) ingressRoutes() {
	g.handle("POST /ingress/{name}", g.ingressPost)
}

// ingressPost starts the listener's playbook with {"payload": body}, as
// the gateway's own token, after checking the body's signature.
func (g *Gateway) ingressPost(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	l, ok := g.ingress[name]
	if !ok {
		writeErr(w, apierr.New(apierr.NotFound, "no webhook listener %q (MILLRACE_INGRESS_FILE)", name))
		return
	}
	count := func(outcome string) { g.metrics.ingress.WithLabelValues(name, outcome).Inc() }
	body, ok := g.readBody(w, r, int64(g.cfg.MaxBodyBytes))
	if !ok {
		count("too_large")
		return
	}
	if !validSignature(l.secret, body, r.Header.Get(SignatureHeader)) {
		count("bad_signature")
		writeErr(w, apierr.New(apierr.Unauthenticated, "missing or wrong %s: send sha256=<hex HMAC-SHA256 of the body with the listener's secret>", SignatureHeader))
		return
	}
	if !json.Valid(body) {
		count("bad_body")
		writeErr(w, apierr.New(apierr.BadJSON, "the webhook body must be JSON; it becomes the playbook's workload as payload"))
		return
	}
	req, _ := json.Marshal(api.ExecuteRequest{Path: l.Playbook, Payload: map[string]any{"payload": json.RawMessage(body)}})
	ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
	defer cancel()
	up, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.apiURL("/api/execute"), bytes.NewReader(req))
	up.Header.Set("Content-Type", "application/json")
	up.Header.Set("Authorization", "Bearer "+g.cfg.Token)
	resp, err := g.upstream.Do(up)
	if err != nil {
		count("failed")
		writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the gateway could not reach the server at %s to start %s: %v; the sender should retry", g.server, l.Playbook, err))
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusAccepted {
		count("failed")
		g.log.Warn("webhook: the server refused to start the playbook", "listener", name, "playbook", l.Playbook, "status", resp.StatusCode, "reply", string(bytes.TrimSpace(raw)))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			// The sender did nothing wrong: the gateway's own token did.
			writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the server refused the gateway's token (MILLRACE_GATEWAY_TOKEN): it must be a valid operator token"))
			return
		}
		relay(w, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
		return
	}
	var started api.Started
	if err := json.Unmarshal(raw, &started); err != nil {
		count("failed")
		writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the server's execute reply is not JSON: %v", err))
		return
	}
	count("started")
	g.log.Info("webhook started a playbook", "listener", name, "playbook", l.Playbook, "execution_id", started.ExecutionID)
	writeJSON(w, http.StatusAccepted, map[string]int64{"execution_id": started.ExecutionID})
}

// validSignature checks header = sha256=<hex HMAC-SHA256(secret, body)>
// in constant time.
func validSignature(secret, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// Sign returns the X-Millrace-Signature value for body: for senders and tests.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
