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
	// DefaultShellTimeout bounds all of a shell step's commands together.
	DefaultShellTimeout = 300 * time.Second
	// shellOutputCap is how much of stdout and of stderr a result keeps.
	shellOutputCap = 1 << 20
	// shellStderrTail is how much of stderr an error message quotes.
	shellStderrTail = 500
	// shellPipeGrace is how long to wait for output after the shell exits
	// when a background process it started still holds stdout or stderr.
	shellPipeGrace = 5 * time.Second
	// shellPath runs every command, like a Dockerfile RUN line.
	shellPath = "/bin/sh"
)

var shellKeys = []string{"cmds", "env", "cwd", "timeout_seconds"}

// shellTool runs each of cmds with /bin/sh -c in order, stopping at the first
// failure. Each command runs in its own process group so that a timeout or
// cancellation, and the end of a command, kill everything it started:
// a worker must not leak processes between commands.
type shellTool struct{}

func (shellTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	cmds, err := shellCmds(cfg)
	if err != nil {
		return nil, err
	}
	env, err := optStringMap(cfg, "shell", "env")
	if err != nil {
		return nil, err
	}
	for k := range env {
		if strings.ContainsAny(k, "=\x00") {
			return nil, configError("shell", "env", "name %q must not contain '=' or NUL", k)
		}
	}
	cwd, err := optString(cfg, "shell", "cwd", "")
	if err != nil {
		return nil, err
	}
	timeout, err := optSeconds(cfg, "shell", "timeout_seconds", DefaultShellTimeout)
	if err != nil {
		return nil, err
	}

	environ := os.Environ()
	for _, k := range sortedKeys(env) {
		environ = append(environ, k+"="+env[k])
	}

	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stdout := &cappedBuffer{limit: shellOutputCap}
	stderr := &cappedBuffer{limit: shellOutputCap, tailSize: shellStderrTail}
	result := func(code int) map[string]any {
		return map[string]any{"stdout": stdout.String(), "stderr": stderr.String(), "exit_code": code}
	}

	for i, line := range cmds {
		cmd := exec.CommandContext(runCtx, shellPath, "-c", line)
		cmd.Env = environ
		cmd.Dir = cwd
		cmd.Stdout = stdout
		cmd.Stderr = stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return killGroup(cmd) }
		cmd.WaitDelay = shellPipeGrace

		runErr := cmd.Run()
		if cmd.Process != nil {
			// Reap whatever the command left running in its group.
			_ = killGroup(cmd)
		}
		step := ""
		if len(cmds) > 1 {
			step = fmt.Sprintf(" %d of %d", i+1, len(cmds))
		}

		if runErr != nil && runCtx.Err() != nil {
			code := exitCode(cmd)
			if ctx.Err() != nil {
				return nil, &Error{Kind: ErrorKindCanceled, Retryable: true, Result: result(code),
					Message: fmt.Sprintf("shell command%s was stopped because the worker canceled it: %v", step, context.Cause(ctx))}
			}
			return nil, &Error{Kind: "shell", Retryable: true, Result: result(code),
				Message: fmt.Sprintf("shell command%s timed out after %s and was killed; raise timeout_seconds if it needs longer", step, timeout)}
		}
		if runErr != nil && cmd.ProcessState == nil {
			// Never started: missing cwd, unusable shell. Retrying won't help.
			return nil, &Error{Kind: "shell", Result: result(-1),
				Message: fmt.Sprintf("cannot start shell command%s: %v; check cwd and that %s exists", step, runErr, shellPath)}
		}
		if code := exitCode(cmd); code != 0 {
			return nil, &Error{Kind: "shell", Result: result(code),
				Message: fmt.Sprintf("shell command%s exited with code %d; stderr tail: %s", step, code, stderr.Tail())}
		}
		// A zero exit with runErr == exec.ErrWaitDelay means a background
		// process held the output open; it has been killed and the command
		// itself succeeded.
	}
	return result(0), nil
}

// shellCmds reads "cmds": one string or a list of strings.
func shellCmds(cfg map[string]any) ([]string, error) {
	var cmds []string
	switch v := cfg["cmds"].(type) {
	case nil:
		return nil, configError("shell", "cmds", "is required: give a command string or a list of them")
	case string:
		cmds = []string{v}
	case []string:
		cmds = v
	case []any:
		for i, c := range v {
			s, ok := c.(string)
			if !ok {
				return nil, configError("shell", "cmds", "item %d must be a string, got %s", i, describe(c))
			}
			cmds = append(cmds, s)
		}
	default:
		return nil, configError("shell", "cmds", "must be a string or a list of strings, got %s", describe(v))
	}
	if len(cmds) == 0 {
		return nil, configError("shell", "cmds", "is empty: give at least one command")
	}
	return cmds, nil
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
