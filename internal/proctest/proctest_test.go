package proctest_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/proctest"
)

// A child's output is kept, its exit is seen by Exited and Wait, and its
// exit status comes back from Wait.
func TestProcOutputAndExit(t *testing.T) {
	t.Parallel()
	p := proctest.Start(t, "sh", syscall.SIGKILL, os.Environ(), "sh", "-c", "echo out; echo err >&2; exit 3")
	err := p.Wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Wait = %v, want exit status 3", err)
	}
	if out := p.Output(); out != "out\nerr\n" && out != "err\nout\n" {
		t.Fatalf("Output after Wait = %q, want both lines", out)
	}
	if err := p.Exited(); err == nil || !strings.Contains(err.Error(), "sh exited") {
		t.Fatalf("Exited = %v, want the exit, named", err)
	}
	if p.Name() != "sh" {
		t.Fatalf("Name = %q", p.Name())
	}
}

// A running child is not Exited, and a signal ends it.
func TestProcSignal(t *testing.T) {
	t.Parallel()
	p := proctest.Start(t, "sleep", syscall.SIGTERM, os.Environ(), "sleep", "60")
	if err := p.Exited(); err != nil {
		t.Fatalf("Exited of a running process = %v", err)
	}
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(t, 10*time.Second); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("Wait after SIGTERM = %v, want terminated", err)
	}
}

// FreeAddr is a loopback address with a port the kernel handed out. (Not
// that the port is still free: another process may take it in between,
// which is what every caller of FreeAddr accepts.)
func TestFreeAddr(t *testing.T) {
	t.Parallel()
	host, port, err := net.SplitHostPort(proctest.FreeAddr(t))
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("FreeAddr = %s:%s, %v; want 127.0.0.1:PORT", host, port, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		t.Fatalf("FreeAddr port %q is not a port", port)
	}
}
