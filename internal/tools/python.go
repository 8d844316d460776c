package tools

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

const (
	// DefaultPythonTimeout bounds one python step, as for shell.
	DefaultPythonTimeout = 300 * time.Second
	// PythonCommand is the interpreter, looked up on the worker's PATH.
	PythonCommand = "python3"
	// pythonResultCap bounds the JSON result a step may hand back. Results
	// over 64 KB are already stored by reference; this only stops a runaway
	// result from exhausting the worker's memory.
	pythonResultCap = 64 << 20
	// pythonTracebackLines is how much of a traceback an error message
	// quotes; the full stderr is in the error's result.
	pythonTracebackLines = 12
	// pythonResultFD is the descriptor the bootstrap writes its envelope to:
	// the first of exec.Cmd.ExtraFiles.
	pythonResultFD = 3
)

var pythonKeys = []string{"code", "input", "timeout", "env", "libs", "auth"}

// PythonContextKey is the config key under which the engine hands a python
// tool NoETL's `context` global (the template variables of the step). It
// is not a playbook key: the validator refuses it in a playbook.
const PythonContextKey = "context"

// PythonLoopKey marks a loop's result passed whole in a python tool's
// input: {PythonLoopKey: {results, stats}} reaches the code as NoETL's loop result
// {results, stats} that also reads as the list (python_bootstrap.py's
// LoopResult). The engine writes the mark; no playbook value carries it.
const PythonLoopKey = "__millrace_loop__"

// pythonNameRE is a Python identifier (ASCII), and pythonModuleRE a dotted
// module path.
var (
	pythonNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	pythonModuleRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
)

// pythonBootstrap runs the step's code in a fresh namespace and reports the
// outcome on a descriptor of its own, so print() output cannot corrupt it.
//
//go:embed python_bootstrap.py
var pythonBootstrap string

// pythonTool runs code with python3 in a subprocess. Each key of input is a
// global of the code and the whole mapping is input_data, as in NoETL;
// `context` is NoETL's context global (PythonContextKey), {} when unbound. The
// step's result is the JSON value of the code's `result` variable (or of a
// top-level return). What the code prints is returned only on failure, in
// the error's result, since a successful step's result is the value itself.
type pythonTool struct{}

// pythonEnvelope is what the bootstrap writes to pythonResultFD.
type pythonEnvelope struct {
	Status    string          `json:"status"` // ok, error, bad_result
	Result    json.RawMessage `json:"result"`
	Type      string          `json:"type"`
	Message   string          `json:"message"`
	Where     string          `json:"where"` // "line N: source" in the code
	Traceback string          `json:"traceback"`
}

func (pythonTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	code, err := optString(cfg, "python", "code", "")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(code) == "" {
		return nil, configError("python", "code", "is required: give the Python source to run; it sets `result = ...`")
	}
	input, err := optMapping(cfg, "python", "input")
	if err != nil {
		return nil, err
	}
	env, err := optStringMap(cfg, "python", "env")
	if err != nil {
		return nil, err
	}
	for k := range env {
		if strings.ContainsAny(k, "=\x00") {
			return nil, configError("python", "env", "name %q must not contain '=' or NUL", k)
		}
	}
	timeout, err := optSeconds(cfg, "python", "timeout", DefaultPythonTimeout)
	if err != nil {
		return nil, err
	}
	libs, err := pythonLibs(cfg)
	if err != nil {
		return nil, err
	}
	if input == nil {
		input = map[string]any{}
	}
	pyctx, err := optMapping(cfg, "python", PythonContextKey)
	if err != nil {
		return nil, err
	}
	req := map[string]any{"code": code, "input": input, "libs": libs}
	if pyctx != nil {
		req["context"] = pyctx
	}
	stdin, err := json.Marshal(req)
	if err != nil {
		return nil, configError("python", "input", "cannot be encoded as JSON: %v", err)
	}

	bin, err := exec.LookPath(PythonCommand)
	if err != nil {
		return nil, &Error{Kind: "python", Message: fmt.Sprintf(
			"cannot find %s on the worker's PATH (%v); install Python 3 on the worker", PythonCommand, err)}
	}

	authEnv, cleanup, err := pythonAuthEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	for k, v := range authEnv {
		if _, own := env[k]; !own {
			if env == nil {
				env = map[string]string{}
			}
			env[k] = v
		}
	}

	// Unbuffered output keeps what the code printed before a timeout.
	environ := append(os.Environ(), "PYTHONUNBUFFERED=1")
	for _, k := range sortedKeys(env) {
		environ = append(environ, k+"="+env[k])
	}

	resultR, resultW, err := os.Pipe()
	if err != nil {
		return nil, &Error{Kind: "python", Retryable: true, Message: fmt.Sprintf("cannot create the result pipe: %v", err)}
	}
	defer resultR.Close()
	defer resultW.Close() // if it never reached the child

	p := newProcRunner(ctx, timeout)
	defer p.close()
	cmd := p.command(bin, "-c", pythonBootstrap, fmt.Sprint(pythonResultFD))
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.ExtraFiles = []*os.File{resultW}

	// The envelope is one JSON document: decoding stops at its end, so a
	// process that outlives the bootstrap holding the pipe cannot delay it.
	type read struct {
		envelope json.RawMessage
		tooLarge bool
		err      error // io.EOF: nothing was written
	}
	readDone := make(chan read, 1)
	go func() {
		lr := &io.LimitedReader{R: resultR, N: pythonResultCap + 1}
		var raw json.RawMessage
		err := json.NewDecoder(lr).Decode(&raw)
		readDone <- read{raw, lr.N == 0, err}
	}()
	// Only the child may hold the write end once it runs, so the reader
	// sees EOF when the bootstrap exits.
	runErr := p.run(cmd, func() { resultW.Close() })
	if _, ok := errors.AsType[*startError](runErr); ok {
		return nil, &Error{Kind: "python", Message: fmt.Sprintf("cannot start %s: %v", bin, runErr)}
	}
	// run killed the code's process group, which also closed any copy of
	// the result pipe a grandchild held.
	var got read
	select {
	case got = <-readDone:
	case <-time.After(procPipeGrace):
		// The bootstrap wrote nothing and something outside the group (a
		// setsid'd grandchild) holds the pipe: closing our end ends the read.
		resultR.Close()
		got = <-readDone
		got.err = io.EOF
	}

	if err := p.stopped(runErr, "python", "python code", "timeout", p.output); err != nil {
		return nil, err
	}
	switch {
	case got.tooLarge:
		return nil, &Error{Kind: "python", Result: p.output(), Message: fmt.Sprintf(
			"python result is larger than %d MiB; return a smaller result, e.g. write the data to a file or database and return its location",
			pythonResultCap>>20)}
	case errors.Is(got.err, io.EOF), errors.Is(got.err, io.ErrUnexpectedEOF):
		return nil, &Error{Kind: "python", Result: p.output(), Message: fmt.Sprintf(
			"python exited with code %d before reporting a result (did the code call os._exit or get killed?); stderr tail: %s",
			exitCode(cmd), p.stderr.Tail())}
	case got.err != nil:
		return nil, &Error{Kind: "python", Result: p.output(),
			Message: fmt.Sprintf("python tool bootstrap reported a malformed result (%v); this is a Millrace bug", got.err)}
	}
	return decodePythonEnvelope(got.envelope, p.output)
}

func decodePythonEnvelope(data []byte, output func() map[string]any) (any, error) {
	var env pythonEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, &Error{Kind: "python", Result: output(),
			Message: fmt.Sprintf("python tool bootstrap reported a malformed result (%v); this is a Millrace bug", err)}
	}
	switch env.Status {
	case "ok":
		dec := json.NewDecoder(bytes.NewReader(env.Result))
		dec.UseNumber() // keep 64-bit integers exact, as the http tool does
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, &Error{Kind: "python", Result: output(),
				Message: fmt.Sprintf("cannot decode the python result: %v", err)}
		}
		return v, nil
	case "error":
		where := ""
		if env.Where != "" {
			where = " at " + env.Where
		}
		return nil, &Error{Kind: "python", Result: output(), Message: fmt.Sprintf(
			"python code raised %s: %s%s\n%s", env.Type, env.Message, where, lastLines(env.Traceback, pythonTracebackLines))}
	case "bad_result":
		return nil, &Error{Kind: "python", Result: output(), Message: fmt.Sprintf(
			"python result is not JSON-encodable: %s; build the result from dicts, lists, strings, numbers, booleans and None "+
				"(convert dates with str() or .isoformat(), sets with list())", env.Message)}
	}
	return nil, &Error{Kind: "python", Result: output(),
		Message: fmt.Sprintf("python tool bootstrap reported unknown status %q; this is a Millrace bug", env.Status)}
}

// lastLines returns the last n lines of s, trimmed.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// pythonLibs returns cfg["libs"], NoETL's {name: module} imports: each
// module is imported as name before the code runs.
func pythonLibs(cfg map[string]any) (map[string]string, error) {
	v, ok := cfg["libs"]
	if !ok || v == nil {
		return map[string]string{}, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, configError("python", "libs", "must be a map of names to modules, e.g. {json: json, pd: pandas}, got %s", describe(v))
	}
	out := make(map[string]string, len(m))
	for name, mod := range m {
		s, ok := mod.(string)
		switch {
		case !pythonNameRE.MatchString(name):
			return nil, configError("python", "libs", "%q is not a Python name to import a module as", name)
		case !ok || !pythonModuleRE.MatchString(s):
			return nil, configError("python", "libs", "%q must be a module name such as json or os.path, got %s", name, describe(mod))
		}
		out[name] = s
	}
	return out, nil
}

// optMapping returns cfg[key], a mapping, or nil when absent or null.
func optMapping(cfg map[string]any, kind, key string) (map[string]any, error) {
	v, ok := cfg[key]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, configError(kind, key, "must be a mapping of names to values, got %s", describe(v))
	}
	return m, nil
}
