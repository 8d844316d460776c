package tools

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const (
	// procOutputCap is how much of stdout and of stderr a result keeps.
	procOutputCap = 1 << 20
	// procStderrTail is how much of stderr an error message quotes.
	procStderrTail = 500
	// procPipeGrace is how long to wait for output after a program exits
	// when a background process it started still holds stdout or stderr.
	procPipeGrace = 5 * time.Second
)

// procRunner runs the programs of one shell or python step. Each program
// runs in its own process group, so that its end, the step's timeout or
// the worker's cancellation kills everything it started: a worker must not
// leak processes between steps. All of a step's programs share one
// deadline and one pair of capped output buffers.
type procRunner struct {
	ctx     context.Context // the caller's: done means the worker gave up
	runCtx  context.Context // ctx bounded by the step's timeout
	cancel  context.CancelFunc
	timeout time.Duration
	stdout  *cappedBuffer
	stderr  *cappedBuffer
}

// newProcRunner starts the step's deadline; close releases it.
func newProcRunner(ctx context.Context, timeout time.Duration) *procRunner {
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	return &procRunner{ctx: ctx, runCtx: runCtx, cancel: cancel, timeout: timeout,
		stdout: &cappedBuffer{limit: procOutputCap},
		stderr: &cappedBuffer{limit: procOutputCap, tailSize: procStderrTail}}
}

func (p *procRunner) close() { p.cancel() }

// command prepares a program to run in its own process group under the
// step's deadline, writing into the step's buffers. The caller may set
// Env, Dir, Stdin and ExtraFiles before passing it to run.
func (p *procRunner) command(name string, arg ...string) *exec.Cmd {
	cmd := exec.CommandContext(p.runCtx, name, arg...)
	cmd.Stdout = p.stdout
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = procPipeGrace
	return cmd
}

// startError is the error of a program that never started (a missing cwd
// or interpreter): retrying will not help.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// run starts cmd, calls started (when not nil) once it runs, waits for it
// and kills whatever it left running in its group. It returns a
// *startError when cmd could not start. A zero exit with
// exec.ErrWaitDelay means a background process held the output open: it
// has been killed and the program itself succeeded.
func (p *procRunner) run(cmd *exec.Cmd, started func()) error {
	if err := cmd.Start(); err != nil {
		return &startError{err}
	}
	if started != nil {
		started()
	}
	err := cmd.Wait()
	_ = killGroup(cmd)
	return err
}

// stopped returns the error for a program (what: "shell command 2 of 3",
// "python code") that the worker's cancellation or the step's timeout
// (configured under timeoutKey) stopped, or nil when neither did. Both are
// retryable: another attempt may well finish. result builds the error's
// result, only when there is an error.
func (p *procRunner) stopped(runErr error, kind, what, timeoutKey string, result func() map[string]any) error {
	if runErr == nil || p.runCtx.Err() == nil {
		return nil
	}
	if p.ctx.Err() != nil {
		return &Error{Kind: ErrorKindCanceled, Retryable: true, Result: result(),
			Message: fmt.Sprintf("%s was stopped because the worker canceled it: %v", what, context.Cause(p.ctx))}
	}
	return &Error{Kind: kind, Retryable: true, Result: result(),
		Message: fmt.Sprintf("%s timed out after %s and was killed; raise %s if it needs longer", what, p.timeout, timeoutKey)}
}

// output is what the step's programs printed.
func (p *procRunner) output() map[string]any {
	return map[string]any{"stdout": p.stdout.String(), "stderr": p.stderr.String()}
}

// killGroup SIGKILLs the command's whole process group (pgid == pid because
// of Setpgid), so grandchildren such as a backgrounded sleep die too.
func killGroup(cmd *exec.Cmd) error {
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// exitCode reports the command's exit status the way a shell would: 128+n
// for death by signal n, -1 if it never ran.
func exitCode(cmd *exec.Cmd) int {
	ps := cmd.ProcessState
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// cappedBuffer keeps the first limit bytes written and, if tailSize > 0, the
// last tailSize bytes. Write never fails so a chatty command is not killed
// by SIGPIPE once the cap is reached.
type cappedBuffer struct {
	limit    int
	tailSize int
	buf      []byte
	dropped  int64
	tail     []byte
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - len(b.buf); room > 0 {
		n := min(room, len(p))
		b.buf = append(b.buf, p[:n]...)
		b.dropped += int64(len(p) - n)
	} else {
		b.dropped += int64(len(p))
	}
	if b.tailSize > 0 {
		if len(p) >= b.tailSize {
			b.tail = append(b.tail[:0], p[len(p)-b.tailSize:]...)
		} else {
			b.tail = append(b.tail, p...)
			if over := len(b.tail) - b.tailSize; over > 0 {
				b.tail = append(b.tail[:0], b.tail[over:]...)
			}
		}
	}
	return len(p), nil
}

// String returns the kept output with a marker when some was dropped.
func (b *cappedBuffer) String() string {
	if b.dropped == 0 {
		return string(b.buf)
	}
	return fmt.Sprintf("%s\n[truncated: %d more bytes]", b.buf, b.dropped)
}

// Tail returns the last tailSize bytes written, or "(empty)".
func (b *cappedBuffer) Tail() string {
	// The tail may start mid-rune; drop the partial rune.
	t := strings.TrimSpace(strings.ToValidUTF8(string(b.tail), ""))
	if t == "" {
		return "(empty)"
	}
	return t
}
