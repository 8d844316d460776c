package image_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

const root = "../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

// stage is one FROM and the instructions under it.
type stage struct {
	from, name string
	ins        []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// parseDockerfile reads the stages of a Dockerfile: comments and blank
// lines dropped, lines ending in \ joined.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	start := 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return stages
}

// buildScriptOutput checks the Dockerfile's build stage and returns the
// output path it gives scripts/build.sh, the one argument the script takes.
// The build flags live in the script only: the Dockerfile may not build
// any other way, or the image would not be the binary CI tests.
func buildScriptOutput(t *testing.T, stages []stage) (buildStage stage, out string) {
	t.Helper()
	for _, s := range stages {
		for _, in := range s.all("RUN") {
			if strings.Contains(in.args, "go build") || strings.Contains(in.args, "CGO_ENABLED") || strings.Contains(in.args, "-ldflags") {
				t.Errorf("Dockerfile:%d: RUN %s builds or sets build flags itself; the build is scripts/build.sh's alone", in.line, in.args)
			}
			if !strings.Contains(in.args, "scripts/build.sh") {
				continue
			}
			if out != "" {
				t.Errorf("Dockerfile:%d: a second scripts/build.sh", in.line)
			}
			f := strings.Fields(in.args)
			if len(f) != 2 || f[0] != "scripts/build.sh" {
				t.Fatalf("Dockerfile:%d: RUN %s; want exactly `RUN scripts/build.sh OUTPUT` (VERSION comes from ARG VERSION), as the test runs it", in.line, in.args)
			}
			buildStage, out = s, f[1]
		}
	}
	if out == "" {
		t.Fatal("the Dockerfile never runs scripts/build.sh")
	}
	return buildStage, out
}

// The Dockerfile builds with scripts/build.sh on the Go go.mod asks for,
// and the runtime stage is what the chart and the docs say.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2 (builder, runtime)", len(stages))
	}
	build, out := buildScriptOutput(t, stages)
	if build.name == "" || build.name != stages[0].name {
		t.Errorf("scripts/build.sh runs in stage %q; want the first, named, stage", build.name)
	}

	// The builder's Go is go.mod's (major.minor), on Debian bookworm like
	// the runtime, so cgo links against the same glibc.
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "golang:" + string(m[1]) + "-bookworm"; build.from != want {
		t.Errorf("builder FROM %s, want %s (go.mod says go %s)", build.from, want, m[1])
	}
	var versionArg bool
	for _, in := range build.all("ARG") {
		versionArg = versionArg || strings.HasPrefix(in.args, "VERSION")
	}
	if !versionArg {
		t.Error("the builder declares no ARG VERSION: scripts/build.sh would stamp the binary with git describe, and there is no .git in the context")
	}

	run := stages[1]
	if run.from != "debian:bookworm-slim" {
		t.Errorf("runtime FROM %s, want debian:bookworm-slim", run.from)
	}
	wantCopy := "--from=" + build.name + " " + out + " /usr/local/bin/millrace"
	if copies := run.all("COPY"); len(copies) != 1 || copies[0].args != wantCopy {
		t.Errorf("runtime COPY %v; want exactly COPY %s", copies, wantCopy)
	}
	checks := map[string]string{
		"ENTRYPOINT": `["/usr/local/bin/millrace"]`,
		"USER":       "65532:65532",
		"EXPOSE":     "8082 8090 9090",
	}
	for cmd, want := range checks {
		if got := run.all(cmd); len(got) != 1 || got[0].args != want {
			t.Errorf("runtime %s %v, want %s", cmd, got, want)
		}
	}
	var installs string
	for _, in := range run.all("RUN") {
		installs += in.args
	}
	for _, pkg := range []string{"ca-certificates", "tzdata"} {
		if !strings.Contains(installs, pkg) {
			t.Errorf("the runtime stage does not install %s", pkg)
		}
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	builtVer  string
	buildErr  error
	buildDir  string
)

// TestMain removes the binary the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds millrace once with scripts/build.sh, the Dockerfile's way:
// in a copy of the build context (the repository minus .dockerignore, what
// `COPY . .` gives the builder), with one argument, the output (named as in
// the Dockerfile), and VERSION. With -trimpath the copy's directory is not
// part of the compile cache keys, so it costs the copy and the link.
func binary(t *testing.T) (path, version string) {
	t.Helper()
	buildOnce.Do(func() {
		buildErr = errors.New("the Dockerfile has no usable scripts/build.sh line (see TestDockerfile)")
		stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
		_, out := buildScriptOutput(t, stages)
		if buildDir, buildErr = os.MkdirTemp("", "millrace-image-"); buildErr != nil {
			return
		}
		ctxDir := filepath.Join(buildDir, "context")
		if buildErr = copyContext(root, ctxDir); buildErr != nil {
			return
		}
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		builtVer = "v0.0.0-imagetest." + hex.EncodeToString(b)
		builtBin = filepath.Join(buildDir, filepath.Base(out))
		cmd := exec.Command(filepath.Join(ctxDir, "scripts", "build.sh"), builtBin)
		// CGO_ENABLED=0 from the caller must not win: the script is what
		// turns cgo on, whatever the environment says.
		cmd.Env = append(os.Environ(), "VERSION="+builtVer, "CGO_ENABLED=0")
		if outb, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("scripts/build.sh %s in the Docker build context: %v\n%s", builtBin, err, outb)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin, builtVer
}

// dockerignore reads the patterns of a .dockerignore. Only the syntax this
// repository uses is understood (no ! exceptions), so a pattern the test
// would misread fails it instead.
func dockerignore(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pats []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			return nil, fmt.Errorf(".dockerignore: %q: exceptions are not understood by deploy/image's test; teach it", line)
		}
		pats = append(pats, strings.Trim(filepath.Clean(strings.TrimPrefix(line, "/")), "/"))
	}
	return pats, nil
}

// ignored reports whether rel (slash-separated, from the context root)
// matches a pattern as Docker matches them: from the root, with ** for any
// number of directories; a match on a directory excludes what is in it.
func ignored(pats []string, rel string) bool {
	for _, p := range pats {
		if rest, ok := strings.CutPrefix(p, "**/"); ok {
			for _, base := range strings.Split(rel, "/") {
				if m, _ := filepath.Match(rest, base); m {
					return true
				}
			}
			continue
		}
		if m, _ := filepath.Match(p, rel); m {
			return true
		}
	}
	return false
}

// copyContext copies the repository at src to dst as `docker build` sends
// it: without what .dockerignore excludes.
func copyContext(src, dst string) error {
	pats, err := dockerignore(filepath.Join(src, ".dockerignore"))
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		if ignored(pats, filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		default:
			return fmt.Errorf("%s: neither a file nor a directory; the image test does not copy it", rel)
		}
	})
}

func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("millrace %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The binary scripts/build.sh makes carries its version, every role, the
// flags the script promises, and cgo: DuckDB runs in it.
func TestBuiltBinary(t *testing.T) {
	t.Parallel()
	bin, version := binary(t)

	want := "millrace " + version + "\n"
	if got := runBin(t, bin, "version"); got != want {
		t.Errorf("millrace version = %q, want %q", got, want)
	}
	if got := runBin(t, bin, "--version"); got != want {
		t.Errorf("millrace --version = %q, want %q", got, want)
	}
	help := runBin(t, bin, "--help")
	for _, role := range []string{"server", "worker", "gateway", "migrate", "doctor"} {
		if !regexp.MustCompile(`(?m)^\s+` + role + `\s`).MatchString(help) {
			t.Errorf("millrace --help lists no %s command:\n%s", role, help)
		}
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "1" {
		t.Errorf("CGO_ENABLED=%q, want 1 (DuckDB is C++)", settings["CGO_ENABLED"])
	}
	if settings["-trimpath"] != "true" {
		t.Errorf("-trimpath=%q, want true", settings["-trimpath"])
	}
	// -ldflags is not recorded with -trimpath (it may hold paths): the
	// version above shows -X, the ELF below shows -s and -w.

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Symbols(); !errors.Is(err, elf.ErrNoSymbols) {
		t.Errorf("the binary has a symbol table (%v): -s did not apply", err)
	}
	for _, sec := range f.Sections {
		if strings.HasPrefix(sec.Name, ".debug_") || strings.HasPrefix(sec.Name, ".zdebug_") {
			t.Errorf("the binary has DWARF section %s: -w did not apply", sec.Name)
		}
	}
	// Every shared library must be in debian:bookworm-slim without
	// installing anything: glibc's, and GCC's C++ runtime (apt needs it).
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	inBase := []string{"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libresolv.so.2",
		"libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}
	for _, l := range libs {
		if !slices.Contains(inBase, l) {
			t.Errorf("the binary needs %s, which debian:bookworm-slim lacks: install it in the Dockerfile's runtime stage and add it here", l)
		}
	}
}

// The image's binary runs a DuckDB step (cgo linked for real, not a
// CGO_ENABLED=0 build that fails at the first duckdb tool) and migrates a
// store, as the chart's hook Job does.
func TestBuiltBinaryRuns(t *testing.T) {
	t.Parallel()
	bin, _ := binary(t)
	dir := t.TempDir()
	pb := filepath.Join(dir, "duck.yaml")
	err := os.WriteFile(pb, []byte(`apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: duck
  path: image/duck
workflow:
  - step: start
    tool:
      kind: duckdb
      query: "select 6 * 7 as answer"
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if out := runBin(t, bin, "run", pb, "--runtime", "local", "--json"); !strings.Contains(out, `"answer": 42`) {
		t.Errorf("a duckdb step in the built binary: no answer 42 in\n%s", out)
	}

	var rep struct{ From, To, Latest int }
	out := runBin(t, bin, "migrate", "--json", "--database-url", "sqlite:"+filepath.Join(dir, "m.db"))
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("migrate --json: %v\n%s", err, out)
	}
	if rep.From != 0 || rep.To == 0 || rep.To != rep.Latest {
		t.Errorf("migrate on a new store: %+v, want from 0 to the latest", rep)
	}
}

// The context copy matches as Docker does: from the root, ** for any
// directories, a directory's match taking its contents.
func TestDockerignoreMatching(t *testing.T) {
	t.Parallel()
	pats, err := dockerignore(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{
		".git":                                 true, // a worktree's .git is a file
		"millrace":                             true, // a binary README's example builds
		"cmd/millrace":                         false,
		"cmd/millrace/main.go":                 false,
		"docs":                                 true,
		"deploy":                               true,
		"internal/ui/browsertest/node_modules": true,
		"internal/ui/static":                   false,
		"internal/store/pgdriver/migrations":   false,
		"x.test":                               true,
		"internal/cli/cli.test":                false, // Docker's *.test is the root's only
		"go.mod":                               false,
		"scripts/build.sh":                     false,
	} {
		if got := ignored(pats, rel); got != want {
			t.Errorf("%s: ignored = %v, want %v", rel, got, want)
		}
	}
}
