// Package proctest runs real processes for tests: the millrace binary,
// built once per test binary, and any other program, each with its output
// kept for failure messages and stopped when its test ends.
package proctest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long a stopped process has to exit before it is killed
// and the test fails.
const stopGrace = 30 * time.Second

// Main is a TestMain: it builds ./cmd/millrace with flags (e.g. "-race")
// into a temporary directory, sets *bin to its path, runs the tests and
// removes the directory.
func Main(m *testing.M, bin *string, flags ...string) {
	dir, err := os.MkdirTemp("", "millrace-proctest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "millrace")
	args := append(append([]string{"build", "-o", *bin}, flags...), "github.com/millrace/millrace/cmd/millrace")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build millrace (fix the build, then rerun the tests):", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for a child process to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is a child process whose output is kept for failure messages.
type Proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error // the exit error, set before done closes
}

// Start runs bin with args and env as its environment (nil: the test's
// own, as in exec.Cmd). When the test ends the process gets stop (SIGKILL
// ends it at once; after SIGTERM it has 30 s before it is killed and the
// test fails); a data race it reported fails the test, and its output is
// logged if the test failed.
func Start(t testing.TB, name string, stop syscall.Signal, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = env
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		// A line longer than the buffer ends the scan: drain the rest
		// so the child never blocks writing.
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		<-read // so Output after an exit has every line
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Signal(stop)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("%s did not exit within %s of %s", name, stopGrace, stop)
		}
		if strings.Contains(p.Output(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, p.Output())
		}
	})
	return p
}

// Name is the name Start was given.
func (p *Proc) Name() string { return p.name }

// Output is everything the process wrote so far, stdout and stderr.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Exited reports an exit as an error (with the output), and nil while the
// process runs: polls waiting for it to become ready fail at once with it.
func (p *Proc) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.Output())
	default:
		return nil
	}
}

// Signal sends sig; a process that has exited ignores it.
func (p *Proc) Signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// Wait waits up to d for the process to exit and returns its exit error;
// a process still running after d fails the test.
func (p *Proc) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s\n%s", p.name, d, p.Output())
		return nil
	}
}
