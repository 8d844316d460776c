package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// docBlock is one fenced code block of a Markdown file.
type docBlock struct {
	file string
	line int    // of the opening fence
	info string // the fence's info string: "sh", "text", "sh slow", ...
	body string
}

func (b docBlock) lang() string {
	f := strings.Fields(b.info)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func (b docBlock) name() string { return filepath.Base(b.file) + ":" + strconv.Itoa(b.line) }

// docBlocks returns the fenced blocks of a Markdown file.
func docBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []docBlock
	var cur *docBlock
	var body strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &docBlock{file: path, line: n, info: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
			body.Reset()
		case cur != nil && strings.TrimSpace(line) == "```":
			cur.body = body.String()
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(line + "\n")
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: fence never closed", path, cur.line)
	}
	return out
}

// ciTestCommand is the line README.md gives for the tests. The docs test
// does not run it (it would run itself); it checks that .ci/run does.
const ciTestCommand = "go test -race -count=1 -timeout 30m ./..."

// Every shell example in README.md and docs/ runs as written, with the
// built millrace on PATH:
//
//   - ```sh blocks run in order, file by file, each with `sh -ex` in the
//     repository root. A block that starts `millrace dev` itself gets a
//     fresh data directory and free ports; the others run against one
//     `millrace dev` this test starts, which the client commands find
//     through its dev.json, exactly as in a user's second terminal.
//     localhost:8082 in a block (curl) is that dev's API address, and
//     $WAREHOUSE_URL is the test PostgreSQL.
//   - ```sh slow blocks (the benchmark campaign: many minutes of load) run
//     only with MILLRACE_DOCS_SLOW=1.
//   - ```yaml blocks that are whole playbooks pass `millrace validate`.
//   - ```text blocks name hosts that do not exist here (deployments) and
//     are not run; other yaml and json blocks are fragments, not commands.
func TestDocExamples(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs every documented command; not in -short")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(root, "README.md")}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, docs...)

	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "\n"+ciTestCommand+"\n") {
		t.Fatalf(".ci/run does not run README's test command %q verbatim", ciTestCommand)
	}

	// README builds ./millrace in the repository root; leave no binary
	// behind that was not there before.
	if _, err := os.Stat(filepath.Join(root, "millrace")); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { os.Remove(filepath.Join(root, "millrace")) })
	}

	slow := os.Getenv("MILLRACE_DOCS_SLOW") == "1"
	var dev *docDev
	ran := 0
	for _, f := range files {
		for _, b := range docBlocks(t, f) {
			switch lang := b.lang(); {
			case lang == "text":
				t.Logf("%s: not run (```text: names other hosts)", b.name())
				continue
			case lang == "yaml" && strings.Contains(b.body, "kind: Playbook"):
				validateDocPlaybook(t, b)
				continue
			case lang != "sh":
				continue
			case strings.Contains(b.info, "slow") && !slow:
				t.Logf("%s: not run (```sh slow: set MILLRACE_DOCS_SLOW=1 to run it)", b.name())
				continue
			}
			if dev == nil && !startsDev(b.body) {
				dev = startDocDev(t, root)
			}
			runDocBlock(t, root, b, dev)
			ran++
		}
	}
	if ran == 0 {
		t.Fatal("no sh blocks found")
	}
}

func validateDocPlaybook(t *testing.T, b docBlock) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "playbook.yaml")
	if err := os.WriteFile(f, []byte(b.body), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(binary, "validate", f).CombinedOutput(); err != nil {
		t.Fatalf("%s: the playbook does not validate: %v\n%s", b.name(), err, out)
	}
	t.Logf("%s: playbook validates", b.name())
}

var devLine = regexp.MustCompile(`(?m)^\s*(go run \./cmd/millrace|\./millrace|millrace) dev\b`)

// startsDev reports whether a block starts its own dev instance.
func startsDev(body string) bool { return devLine.MatchString(body) }

// docDev is the `millrace dev` the blocks talk to.
type docDev struct {
	dataDir string
	apiURL  string
	natsURL string
}

func startDocDev(t *testing.T, root string) *docDev {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(binary, "dev", "--data-dir", dir, "--addr", "127.0.0.1:0", "--nats-port", "-1")
	cmd.Dir = root
	cmd.Env = append(docEnv(), "MILLRACE_LOG_LEVEL=warn")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("millrace dev exited with %v after SIGTERM\n%s", err, out.String())
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("millrace dev did not exit within 60s of SIGTERM\n%s", out.String())
		}
	})
	var d struct {
		APIURL  string `json:"api_url"`
		NATSURL string `json:"nats_url"`
	}
	if err := wait.Poll(60*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("millrace dev exited before it was up: %v\n%s", err, out.String())
		default:
		}
		b, err := os.ReadFile(filepath.Join(dir, "dev.json"))
		if err == nil && json.Unmarshal(b, &d) == nil && d.APIURL != "" && d.NATSURL != "" {
			return nil
		}
		return errors.New("no dev.json")
	}); err != nil {
		t.Fatalf("millrace dev wrote no dev.json within 60s\n%s", out.String())
	}
	t.Logf("millrace dev for the examples: %s (data dir %s)", d.APIURL, dir)
	return &docDev{dataDir: dir, apiURL: d.APIURL, natsURL: d.NATSURL}
}

// docEnv is the environment of the examples: the built binary first on
// PATH, and nothing that would point the client commands elsewhere.
func docEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "SERVER_API_URL", k == "NATS_URL", k == "DATABASE_URL",
			strings.HasPrefix(k, "MILLRACE_") && k != "MILLRACE_TEST_DATABASE_URL":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"WAREHOUSE_URL="+pgtest.URL())
}

func runDocBlock(t *testing.T, root string, b docBlock, dev *docDev) {
	t.Helper()
	script := b.body
	var lines []string
	for _, l := range strings.Split(script, "\n") {
		cmd, _, _ := strings.Cut(l, "#")
		if strings.TrimSpace(cmd) == ciTestCommand {
			t.Logf("%s: %q is run by .ci/run itself, not here", b.name(), ciTestCommand)
			l = ": " + l
		}
		lines = append(lines, l)
	}
	script = strings.Join(lines, "\n")
	env := docEnv()
	if startsDev(script) {
		// Its own dev: a fresh data directory and any free ports.
		env = append(env, "MILLRACE_DATA_DIR="+t.TempDir(), "MILLRACE_ADDR=127.0.0.1:0", "MILLRACE_DEV_NATS_PORT=-1", "MILLRACE_LOG_LEVEL=warn")
	} else {
		u, err := url.Parse(dev.apiURL)
		if err != nil {
			t.Fatal(err)
		}
		for _, def := range []string{"localhost:8082", "127.0.0.1:8082"} {
			if strings.Contains(script, def) {
				t.Logf("%s: %s is the test's dev at %s", b.name(), def, u.Host)
				script = strings.ReplaceAll(script, def, u.Host)
			}
		}
		// Commands that do not look for dev (millrace worker, say) must
		// reach this dev too, never the machine's own NATS or server.
		env = append(env, "MILLRACE_DATA_DIR="+dev.dataDir, "NATS_URL="+dev.natsURL, "SERVER_API_URL="+dev.apiURL)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-ex", "-c", script)
	cmd.Dir, cmd.Env = root, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: example failed after %s: %v\n--- block\n%s--- output\n%s", b.name(), time.Since(start).Round(time.Millisecond), err, b.body, out)
	}
	t.Logf("%s: ok in %s", b.name(), time.Since(start).Round(time.Millisecond))
}

// syncBuffer collects a subprocess's output for the failure message.
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
