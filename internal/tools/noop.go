package tools

import "context"

// noop does nothing. Its optional "result" is returned verbatim, which lets
// tests and playbook authors stand in for a real tool.
var noopKeys = []string{"result"}

type noopTool struct{}

func (noopTool) Run(_ context.Context, cfg map[string]any) (any, error) {
	if r, ok := cfg["result"]; ok {
		return r, nil
	}
	return map[string]any{}, nil
}
