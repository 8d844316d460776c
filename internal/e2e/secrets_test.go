package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// TestSecretsNeverLeak is issue 15's "secrets stay secret": flows that use
// credentials (auth: and a keychain, a postgres and an http tool, a step
// that fails with them), warehouse queries on sealed project connections
// on a warehouse worker (one that fails to connect), the gateway login, with passwords inside
// NATS_URL and DATABASE_URL and a key ring (MILLRACE_SECRET_KEYS). Then
// every log line (server, worker, gateway, CLI), every row of every table
// (events, commands, executions, outbox...), every result file, every NATS
// message and every API response the test received is searched for each
// secret: none may appear.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tag := randHex(6)
	sec := map[string]string{ // what it is -> the secret value
		"NATS password":           "natsPW" + tag,
		"DATABASE_URL password":   "dbPW" + tag,
		"MILLRACE_SECRET_KEY":     randHex(32),
		"MILLRACE_SECRET_KEYS":    randHex(32),
		"credential token":        "tokPW" + tag,
		"credential pg password":  "pgPW" + tag,
		"credential bad password": "badPW" + tag,
		"warehouse password":      "whPW" + tag,
		"bad warehouse password":  "whBadPW" + tag,
	}
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, User: "millrace", Password: sec["NATS password"]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	// Every NATS message, recorded before anything runs.
	var nmu sync.Mutex
	var natsLog bytes.Buffer
	nc, err := nats.Connect(emb.URLWithCredentials())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(">", func(m *nats.Msg) {
		nmu.Lock()
		defer nmu.Unlock()
		fmt.Fprintf(&natsLog, "%s %v %s\n", m.Subject, m.Header, m.Data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	schemaURL := pgtest.NewSchema(t)
	u, err := url.Parse(schemaURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), sec["DATABASE_URL password"]) // trust auth: accepted, ignored
	dbURL := u.String()
	schema := u.Query().Get("search_path")

	c := newCluster(t, clusterOpts{db: dbURL})
	c.enableQueries() // queries run on a warehouse worker, over NATS
	resultsDir := t.TempDir()
	c.env = append(c.env,
		"NATS_URL="+emb.URLWithCredentials(),
		"MILLRACE_AUTH=tokens",
		"MILLRACE_SECRET_KEY="+sec["MILLRACE_SECRET_KEY"],
		"MILLRACE_SECRET_KEYS="+sec["MILLRACE_SECRET_KEYS"],
		"MILLRACE_RESULTS_DIR="+resultsDir,
		"MILLRACE_LOG_LEVEL=debug",
	)
	var cliOut strings.Builder
	admin := authCLIToken(t, c, nil, "token", "create", "--role", "admin", "--name", "leak-admin")
	server := c.startServer()
	worker := authCLIToken(t, c, &admin, "token", "create", "--role", "worker", "--name", "leak-worker")
	operator := authCLIToken(t, c, &admin, "token", "create", "--role", "operator", "--name", "leak-operator")
	tokens := map[string]string{"admin token": admin, "worker token": worker, "operator token": operator}
	wp := c.startEnv("worker", []string{"MILLRACE_WORKER_TOKEN=" + worker}, "worker", "--concurrency", "4")
	wh := c.startEnv("warehouse-worker", []string{"MILLRACE_WORKER_TOKEN=" + worker}, "worker", "--stream", "warehouse", "--concurrency", "2")

	// Every API response the test reads is kept.
	var rmu sync.Mutex
	var responses bytes.Buffer
	keep := func(cl *client.Client) *client.Client {
		cl.HTTP.Transport = recorder{next: cl.HTTP.Transport, mu: &rmu, to: &responses}
		return cl
	}
	adm := keep(client.New(c.url).WithToken(admin))

	// An HTTP service that wants the credential's token.
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+sec["credential token"] || r.URL.Path == "/deny" {
			http.Error(w, "denied", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, `{"ok": true, "seen": "canary`+tag+`"}`)
	}))
	t.Cleanup(svc.Close)

	for _, cr := range []api.Credential{
		{Name: "api_token", Kind: "http", Data: map[string]any{"token": sec["credential token"]}},
		{Name: "pg_main", Kind: "postgres", Data: map[string]any{"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": sec["credential pg password"], "database": "test", "sslmode": "disable"}},
		{Name: "pg_down", Kind: "postgres", Data: map[string]any{"url": "postgres://postgres:" + sec["credential bad password"] + "@" + proctest.FreeAddr(t) + "/test?sslmode=disable&connect_timeout=2"}},
	} {
		if _, err := adm.CredentialPut(ctx, cr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := adm.CredentialReseal(ctx); err != nil {
		t.Fatal(err)
	}
	c.api = keep(client.New(c.url).WithToken(operator))
	c.register(`
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: leak_ok, path: leak/ok}
keychain:
  - {name: api, credential: api_token}
workflow:
  - step: start
    tool: {kind: http, url: "` + svc.URL + `/ok", headers: {Authorization: "Bearer {{ keychain.api.token }}"}}
    next: {arcs: [{step: with_auth}]}
  - step: with_auth
    tool: {kind: http, url: "` + svc.URL + `/ok", auth: api_token}
    next: {arcs: [{step: pg}]}
  - step: pg
    tool: {kind: postgres, auth: pg_main, command: "SELECT 1 AS one"}
`)
	c.register(`
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: leak_deny, path: leak/deny}
workflow:
  - step: start
    tool: {kind: http, url: "` + svc.URL + `/deny", auth: api_token}
`)
	c.register(`
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: leak_pgdown, path: leak/pgdown}
workflow:
  - step: start
    tool: {kind: postgres, auth: pg_down, command: "SELECT 1", timeout: 3}
`)
	// A canary (no secret) travels where the secrets would (the workload,
	// the service's answer): the search must find it, or searches nothing.
	canary := "canary" + tag
	ids := []int64{}
	for _, p := range []string{"leak/ok", "leak/deny", "leak/pgdown"} {
		ids = append(ids, c.executeMany(p, 2, func(int) map[string]any { return map[string]any{"canary": canary} })...)
	}
	done := c.waitAll(ids, 3*time.Minute)
	for i, ex := range done {
		want := api.ExecFailed // an http 401, a database that is not there
		if i < 2 {
			want = api.ExecCompleted
		}
		if ex.Status != want {
			t.Fatalf("execution %d (%s) is %s (%s), want %s\n--- worker\n%s", ex.ExecutionID, ex.Path, ex.Status, ex.Error, want, wp.Output())
		}
		if _, err := c.api.Events(ctx, ex.ExecutionID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.api.Executions(ctx, 1, 100); err != nil {
		t.Fatal(err)
	}

	// Queries on sealed project connections: one answers, one cannot connect.
	if _, err := adm.ProjectPut(ctx, "wh", api.WarehouseConn{Type: "postgres", URL: "postgres://postgres:" + sec["warehouse password"] + "@127.0.0.1:5432/test?sslmode=disable"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.ProjectPut(ctx, "wh_down", api.WarehouseConn{Type: "postgres", URL: "postgres://postgres:" + sec["bad warehouse password"] + "@" + proctest.FreeAddr(t) + "/test?sslmode=disable&connect_timeout=2"}); err != nil {
		t.Fatal(err)
	}
	for project, want := range map[string]api.QueryStatus{"wh": api.QueryReady, "wh_down": api.QueryError} {
		sub, err := c.api.QuerySubmit(ctx, project, "SELECT 41 + 1 AS answer", "", false)
		if err != nil {
			t.Fatal(err)
		}
		wait.For(t, 2*time.Minute, func() error {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			pg, err := c.api.QueryGet(pctx, project, sub.QueryUUID, 1, 100)
			if err != nil {
				return err
			}
			if pg.Status != want {
				return fmt.Errorf("query on %s is %s (%s), want %s", project, pg.Status, pg.Error, want)
			}
			return nil
		})
	}

	// The gateway: a login with the operator's token, then a read through it.
	gwAddr := proctest.FreeAddr(t)
	gw := c.startEnv("gateway", []string{"MILLRACE_GATEWAY_ADDR=" + gwAddr, "SERVER_API_URL=" + c.url,
		"NATS_SESSION_BUCKET=sess_" + tag, "NATS_REQUEST_BUCKET=req_" + tag}, "gateway")
	var session string
	wait.For(t, time.Minute, func() error {
		if err := gw.Exited(); err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(pctx, "POST", "http://"+gwAddr+"/api/auth/login", strings.NewReader(`{"api_token": "`+operator+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct {
			SessionToken string `json:"session_token"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil || out.SessionToken == "" {
			return fmt.Errorf("gateway login: %s", resp.Status)
		}
		session = out.SessionToken // the login's answer is its one place
		return nil
	})
	tokens["session token"] = session
	gc := keep(client.New("http://" + gwAddr)).WithToken(session)
	for _, id := range ids[:2] {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+gwAddr+"/noetl/executions/"+fmt.Sprint(id), nil)
		resp, err := gc.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET execution %d through the gateway: %s", id, resp.Status)
		}
	}

	// Health and the operational report, as a monitor reads them.
	if _, err := adm.Health(ctx); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", c.url+"/api/ops", nil)
	if resp, err := adm.HTTP.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	// The CLI, as an operator would use it with these settings.
	cliCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"config"}, {"server", "--help"}, {"worker", "--help"}, {"gateway", "--help"}, {"doctor"}} {
		cmd := exec.CommandContext(cliCtx, binary, args...)
		cmd.Env = append(append([]string{}, c.env...), "MILLRACE_TOKEN="+admin, "SERVER_API_URL="+c.url)
		out, _ := cmd.CombinedOutput()
		fmt.Fprintf(&cliOut, "--- millrace %s\n%s", strings.Join(args, " "), out)
	}
	// Bad settings: their errors must not quote the passwords either.
	for _, env := range [][]string{
		{"DATABASE_URL=mysql://root:" + sec["DATABASE_URL password"] + "@127.0.0.1/x"},
		{"NATS_URL=nats://millrace:" + sec["NATS password"] + "%zz@127.0.0.1:1"},
	} {
		cmd := exec.CommandContext(cliCtx, binary, "server")
		cmd.Env = append(append([]string{}, c.env...), append(env, "MILLRACE_ADDR="+proctest.FreeAddr(t))...)
		out, _ := cmd.CombinedOutput()
		fmt.Fprintf(&cliOut, "--- millrace server with %s\n%s", strings.SplitN(env[0], "=", 2)[0], out)
	}

	// What was written: every row of every table of the schema, and every file.
	conn, err := pgx.Connect(ctx, schemaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows bytes.Buffer
	tables, err := conn.Query(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(tables, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		r, err := conn.Query(ctx, "SELECT t::text FROM "+pgx.Identifier{schema, name}.Sanitize()+" t")
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(r, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&rows, "--- %s\n%s\n", name, strings.Join(texts, "\n"))
	}
	var files bytes.Buffer
	_ = filepath.WalkDir(resultsDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			fmt.Fprintf(&files, "--- %s\n%s\n", p, b)
		}
		return nil
	})
	if files.Len() == 0 {
		t.Fatal("no result file was written: the test does not look where results go")
	}
	_ = nc.Flush()

	nmu.Lock()
	natsText := natsLog.String()
	nmu.Unlock()
	rmu.Lock()
	respText := responses.String()
	rmu.Unlock()
	places := map[string]string{
		"the server's log":           server.Output(),
		"the worker's log":           wp.Output(),
		"the warehouse worker's log": wh.Output(),
		"the gateway's log":          gw.Output(),
		"the CLI's output":           cliOut.String(),
		"a table row":                rows.String(),
		"a result file":              files.String(),
		"a NATS message":             natsText,
		"an API response":            respText,
	}
	for what, place := range places {
		if place == "" {
			t.Errorf("nothing recorded from %s: the test searches nothing there", what)
		}
	}
	// The canary is in the workload and in the http steps' results.
	for _, where := range []string{"a table row", "an API response"} {
		if !strings.Contains(places[where], canary) {
			t.Errorf("the canary is not in %s: the test does not see what is written there", where)
		}
	}
	if !strings.Contains(natsText, fmt.Sprint(ids[0])) {
		t.Errorf("no NATS message names execution %d: the subscription saw nothing of the run", ids[0])
	}
	for _, want := range []string{"postgres:***@", "millrace:***@", "is not supported", "NATS_URL entry"} {
		if !strings.Contains(cliOut.String(), want) {
			t.Errorf("the CLI's output lacks %q: the redacted forms were not exercised\n%s", want, cliOut.String())
		}
	}
	leaks := 0
	check := func(kind, value string) {
		for where, text := range places {
			if i := strings.Index(text, value); i >= 0 {
				leaks++
				lo, hi := max(0, i-300), min(len(text), i+len(value)+100)
				t.Errorf("the %s is in %s:\n…%s…", kind, where, text[lo:hi])
			}
		}
	}
	for kind, v := range sec {
		check(kind, v)
	}
	// Tokens travel in requests by design (and the session in the login's
	// answer, which is not recorded); none may be logged, stored or
	// published.
	for kind, v := range tokens {
		check(kind, v)
	}
	if leaks == 0 {
		t.Logf("searched %d bytes of logs, rows, files, NATS messages and responses for %d secrets: none found",
			len(server.Output())+len(wp.Output())+len(gw.Output())+cliOut.Len()+rows.Len()+files.Len()+len(natsText)+len(respText), len(sec)+len(tokens))
	}
}

// recorder keeps every response body the test's clients read.
type recorder struct {
	next http.RoundTripper
	mu   *sync.Mutex
	to   *bytes.Buffer
}

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	fmt.Fprintf(r.to, "%s %s %d %v\n%s\n", req.Method, req.URL.Path, resp.StatusCode, resp.Header, body)
	r.mu.Unlock()
	return resp, err
}
