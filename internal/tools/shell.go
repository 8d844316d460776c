package tools

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

const (
	// DefaultShellTimeout bounds all of a shell step's commands together.
	DefaultShellTimeout = 300 * time.Second
	// shellPath runs every command, like a Dockerfile RUN line.
	shellPath = "/bin/sh"
)

var shellKeys = []string{"cmds", "env", "cwd", "timeout_seconds"}

// shellTool runs each of cmds with /bin/sh -c in order, stopping at the first
// failure. The commands share one timeout; each runs in its own process
// group (see procRunner).
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

	p := newProcRunner(ctx, timeout)
	defer p.close()
	result := func(code int) map[string]any {
		out := p.output()
		out["exit_code"] = code
		return out
	}

	for i, line := range cmds {
		cmd := p.command(shellPath, "-c", line)
		cmd.Env = environ
		cmd.Dir = cwd
		runErr := p.run(cmd, nil)
		what := "shell command"
		if len(cmds) > 1 {
			what = fmt.Sprintf("shell command %d of %d", i+1, len(cmds))
		}
		stoppedResult := func() map[string]any { return result(exitCode(cmd)) }
		if err := p.stopped(runErr, "shell", what, "timeout_seconds", stoppedResult); err != nil {
			return nil, err
		}
		if _, ok := errors.AsType[*startError](runErr); ok {
			// A missing cwd or an unusable shell: retrying won't help.
			return nil, &Error{Kind: "shell", Result: result(-1),
				Message: fmt.Sprintf("cannot start %s: %v; check cwd and that %s exists", what, runErr, shellPath)}
		}
		if code := exitCode(cmd); code != 0 {
			return nil, &Error{Kind: "shell", Result: result(code),
				Message: fmt.Sprintf("%s exited with code %d; stderr tail: %s", what, code, p.stderr.Tail())}
		}
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
