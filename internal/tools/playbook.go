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
var playbookKeys = []string{"path", "version", "input", "return_step", "task", "name"}

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
	res, err := env.RunPlaybook(ctx, req)
	if err == nil {
		return res, nil
	}
	var te *Error
	switch {
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
	if req.Payload, err = optMapping(cfg, "playbook", "input"); err != nil {
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
