package tools

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// task and name are NoETL metadata on a playbook task (task names the
// parent step); they are accepted so NoETL playbooks validate, and ignored.
// payload is NoETL's name for input; timeout bounds the wait for the child.
var playbookKeys = []string{"path", "version", "input", "payload", "return_step", "timeout", "task", "name"}

// playbookInputKeys say the same thing; the validator refuses both at once.
var playbookInputKeys = []string{"input", "payload"}

// playbookTool runs a child playbook through the worker's Env and returns
// its result: the child's own result, or with return_step that step's.
type playbookTool struct{}

func (playbookTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	req, err := parsePlaybookCall(cfg)
	if err != nil {
		return nil, err
	}
	env := EnvFrom(ctx)
	if env == nil {
		return nil, &Error{Kind: ErrorKindConfig, Message: fmt.Sprintf(
			"playbook tool: child playbook %q needs a worker to start it; run the parent on a worker (or with millrace run), not bare tools.Run", req.Path)}
	}
	timeout, err := optSeconds(cfg, "playbook", "timeout", 0)
	if err != nil {
		return nil, err
	}
	waitCtx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := env.RunPlaybook(waitCtx, req)
	if err == nil {
		return res, nil
	}
	var te *Error
	switch {
	case ctx.Err() == nil && waitCtx.Err() != nil:
		// Retryable, as a timeout is: a later run may be faster.
		return nil, &Error{Kind: "playbook", Retryable: true, Message: fmt.Sprintf(
			"child playbook %s did not finish within the step's timeout of %s; the child was cancelled", req.Path, timeout)}
	case errors.As(err, &te):
		return nil, te
	case ctx.Err() != nil:
		return nil, &Error{Kind: ErrorKindCanceled, Retryable: true, Message: fmt.Sprintf(
			"child playbook %s was abandoned because the worker canceled the step: %v", req.Path, context.Cause(ctx))}
	}
	return nil, &Error{Kind: "playbook", Message: fmt.Sprintf("child playbook %s failed: %v", req.Path, err)}
}

func parsePlaybookCall(cfg map[string]any) (ChildRequest, error) {
	var req ChildRequest
	var err error
	if req.Path, err = requiredString(cfg, "playbook", "path", "the catalog path of the child playbook"); err != nil {
		return req, err
	}
	if req.Version, err = playbookVersion(cfg); err != nil {
		return req, err
	}
	inputKey, err := oneOf(cfg, "playbook", playbookInputKeys)
	if err != nil {
		return req, err
	}
	if inputKey == "" {
		inputKey = "input"
	}
	if req.Payload, err = optMapping(cfg, "playbook", inputKey); err != nil {
		return req, err
	}
	if req.ReturnStep, err = optString(cfg, "playbook", "return_step", ""); err != nil {
		return req, err
	}
	return req, nil
}

// playbookVersion reads the optional version: a positive whole number, 0
// (latest) when absent or empty. Rendered templates may give a string.
func playbookVersion(cfg map[string]any) (int, error) {
	v := cfg["version"]
	if v == nil {
		return 0, nil
	}
	if s, ok := v.(string); ok {
		s = strings.TrimSpace(s)
		if s == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return 0, configError("playbook", "version", "must be a positive whole number, got %s", describe(v))
		}
		return n, nil
	}
	f, ok := toFloat(v)
	if !ok || f != math.Trunc(f) || f < 1 || f > math.MaxInt32 {
		return 0, configError("playbook", "version", "must be a positive whole number, got %s", describe(v))
	}
	return int(f), nil
}
