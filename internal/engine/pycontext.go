package engine

import (
	"regexp"

	"github.com/millrace/millrace/internal/tools"
)

// contextNameRE finds the name `context` in python code.
var contextNameRE = regexp.MustCompile(`\bcontext\b`)

// bindPythonContext gives a python tool NoETL's `context` global: the
// template variables its fields were rendered with (workload keys, step
// results, ctx, workload, execution_id, and the run's loop, iter and task
// results), without keychain, whose secrets reach code only through input.
// It is bound only when the rendered code names `context`, so a step that
// does not use it does not carry every earlier result in its command.
func bindPythonContext(cfg map[string]any, vars *lazyVars) {
	if cfg["kind"] != "python" {
		return
	}
	code, _ := cfg["code"].(string)
	if !contextNameRE.MatchString(code) {
		return
	}
	all := vars.get()
	ctx := make(map[string]any, len(all))
	for k, v := range all {
		if k != "keychain" {
			ctx[k] = v
		}
	}
	cfg[tools.PythonContextKey] = ctx
}
