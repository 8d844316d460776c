package playbook

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/millrace/millrace/internal/tools"
)

// inertKeys is the documented allow-list of keys Millrace accepts without
// effect, by where they are (a key path pattern), with the reason; the
// same reasons are rows of docs/compat.md. Any other accepted key must show
// in the parsed playbook.
var inertKeys = map[string]string{
	"metadata.exposes_as_mcp":        "Millrace has no MCP face",
	"keychain[].kind":                "informational (Millrace resolves the credential whatever its kind)",
	"keychain[].scope":               "no token lifetime: the entry is resolved for each command",
	"executor.profile":               "the runtime is chosen by how the run is started",
	"executor.version":               "NoETL's runtime contract name",
	"executor.requires.features":     "NoETL runtime features",
	"executor.spec.no_next_is_error": "false is Millrace's behaviour (true is refused)",
	"executor.spec.policy":           "NoETL's placeholder defaults",
	"step.output":                    "NoETL v10 ignores a step-level output too",
	"step.spec":                      "only spec.policy.admit is accepted (others are refused): NoETL does not enforce it either, and the parser warns",
	"tool.output":                    "Millrace stores every result itself",
	"loop.spec.policy.results":       "NoETL's loop policy has no results and ignores it",
	// NoETL's engine only logs max_seconds and max_bytes; leases are the
	// claim SQL's business, and the worker heartbeats the draining command.
	"loop.spec.frame.max_seconds":       "advisory in NoETL too (only logged)",
	"loop.spec.frame.max_bytes":         "advisory in NoETL too (only logged)",
	"loop.spec.frame.lease_seconds":     "the claim SQL reclaims stale rows; the command's lease is Millrace's",
	"loop.spec.frame.heartbeat_seconds": "the worker heartbeats the draining command on its own schedule",
	"arc.cond":                          "ignored as NoETL ignores it, with a warning",
	"workbook[].desc":                   "documentation",
	// The playbook tool passes these to the worker, which does not read
	// them: NoETL's metadata on a call (see tools.playbookKeys).
	"playbook.task": "NoETL metadata on a playbook call",
	"playbook.name": "NoETL metadata on a playbook call",
}

// TestNothingAcceptedIsIgnored walks every shared NoETL fixture that
// validates and checks each key of its source against the parsed form:
// every key the parser accepted either shows there or is in inertKeys.
func TestNothingAcceptedIsIgnored(t *testing.T) {
	t.Parallel()
	kinds := tools.Kinds()
	for _, dir := range []string{corpusDir, e2eDir} {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			if os.Getenv("CI") != "" {
				t.Fatalf("corpus %s is absent", dir)
			}
			t.Skipf("corpus %s is absent", dir)
		}
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			pb, err := Parse(path, src, kinds)
			if err != nil {
				return nil // refused: TestCorpus and TestCorpusE2E check why
			}
			var doc map[string]any
			if err := yaml.Unmarshal(src, &doc); err != nil {
				t.Errorf("%s: %v", path, err)
				return nil
			}
			w := &walker{kinds: kinds}
			w.playbook(doc, pb)
			for _, miss := range w.ignored {
				t.Errorf("%s: %s was accepted but has no effect and no documented reason", path, miss)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

type walker struct {
	kinds   KindSet
	ignored []string
}

// need records path as ignored unless ok or documented inert.
func (w *walker) need(pattern, path string, ok bool) {
	if !ok {
		if _, inert := inertKeys[pattern]; !inert {
			w.ignored = append(w.ignored, path)
		}
	}
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

func (w *walker) playbook(doc map[string]any, pb *Playbook) {
	for k, v := range doc {
		switch k {
		case "apiVersion":
			w.need(k, k, pb.APIVersion == v)
		case "kind":
			w.need(k, k, pb.Kind == v)
		case "workload":
			w.need(k, k, v == nil || len(pb.Workload) == len(asMap(v)))
		case "metadata":
			for mk, mv := range asMap(v) {
				var ok bool
				switch mk {
				case "name":
					ok = pb.Metadata.Name == fmt.Sprint(mv)
				case "path":
					ok = pb.Metadata.Path == strings.TrimLeft(fmt.Sprint(mv), "/")
				case "description":
					ok = pb.Metadata.Description != ""
				case "tags":
					ok = len(pb.Metadata.Tags) == len(mv.([]any))
				case "labels":
					ok = len(pb.Metadata.Labels) == len(asMap(mv))
				case "version":
					ok = pb.Metadata.Version != ""
				}
				w.need("metadata."+mk, "metadata."+mk, ok)
			}
		case "keychain":
			for i, e := range v.([]any) {
				for ek := range asMap(e) {
					kc := pb.Keychain[i]
					ok := map[string]bool{"name": kc.Name != "", "credential": kc.Credential != ""}[ek]
					w.need("keychain[]."+ek, fmt.Sprintf("keychain[%d].%s", i, ek), ok)
				}
			}
		case "workbook":
			for i, e := range v.([]any) {
				for ek := range asMap(e) {
					// name and tool are resolved into every call (checked
					// there); assert into the calls' Assert.
					w.need("workbook[]."+ek, fmt.Sprintf("workbook[%d].%s", i, ek), ek == "name" || ek == "tool" || ek == "assert")
				}
			}
		case "executor":
			w.executor(asMap(v), pb)
		case "workflow":
			for i, s := range v.([]any) {
				w.step(asMap(s), pb.Steps[i], fmt.Sprintf("workflow[%d]", i))
			}
		default:
			w.need(k, k, false)
		}
	}
}

func (w *walker) executor(ex map[string]any, pb *Playbook) {
	for k, v := range ex {
		switch k {
		case "requires":
			for rk := range asMap(v) {
				// tools is checked against the kinds this build runs.
				w.need("executor.requires."+rk, "executor.requires."+rk, rk == "tools")
			}
		case "spec":
			for sk := range asMap(v) {
				w.need("executor.spec."+sk, "executor.spec."+sk, sk == "entry_step" && pb.Entry != "")
			}
		default:
			w.need("executor."+k, "executor."+k, false)
		}
	}
}

func (w *walker) step(src map[string]any, s *Step, at string) {
	for k, v := range src {
		var ok bool
		switch k {
		case "step":
			ok = s.Name == v
		case "desc":
			ok = s.Desc != ""
		case "timeout":
			ok = s.Timeout > 0
		case "pool":
			ok = s.Pool == v
		case "set":
			ok = len(s.Set) == len(asMap(v))
		case "input":
			// merged into the input of the tool, or of each task that takes it
			ok = inputHas(s.Tool, asMap(v)) || slices.ContainsFunc(s.Tasks, func(t Task) bool { return inputHas(t.Tool, asMap(v)) })
		case "loop":
			ok = s.Loop != nil
			if ok {
				w.loop(asMap(v), s.Loop, at+".loop")
			}
		case "next":
			ok = s.Next != nil
			if ok {
				w.next(asMap(v), s.Next, at+".next")
			}
		case "tool":
			if list, isList := v.([]any); isList {
				ok = len(list) == len(s.Tasks)
				for i := range s.Tasks {
					w.tool(asMap(list[i]), s.Tasks[i].Tool, s.Tasks[i].Policy, s.Tasks[i].Assert, fmt.Sprintf("%s.tool[%d]", at, i))
					if set := asMap(asMap(list[i])["set"]); set != nil && len(s.Tasks[i].Set) != len(set) {
						w.need("", fmt.Sprintf("%s.tool[%d].set", at, i), false)
					}
				}
			} else {
				ok = s.Tool != nil
				w.tool(asMap(v), s.Tool, s.Policy, s.Assert, at+".tool")
			}
		}
		w.need("step."+k, at+"."+k, ok)
	}
}

func inputHas(tool map[string]any, in map[string]any) bool {
	got := asMap(tool["input"])
	for k := range in {
		if _, ok := got[k]; !ok {
			return false
		}
	}
	return got != nil
}

func (w *walker) tool(src, tool map[string]any, pol *Policy, as *Assert, at string) {
	kind, _ := src["kind"].(string)
	for k, v := range src {
		var ok bool
		switch {
		case k == "kind", k == "name" && (kind == KindWorkbook || strings.Contains(at, "tool[")), k == "set" && strings.Contains(at, "tool["):
			ok = true // the kind, the task or entry name, a task's set (checked by step)
		case k == "output":
			w.need("tool.output", at+".output", false)
			continue
		case kind == "playbook" && (k == "task" || k == "name"):
			w.need("playbook."+k, at+"."+k, false)
			continue
		case k == "assert":
			ok = as != nil
		case k == "retry" && kind == "playbook":
			ok = pol != nil
		case k == "spec":
			for sk, sv := range asMap(v) {
				if sk == "policy" {
					w.policy(asMap(sv), pol, at+".spec.policy")
					continue
				}
				w.need("tool."+sk, at+".spec."+sk, toolHas(tool, sk))
			}
			continue
		default:
			ok = toolHas(tool, k)
		}
		w.need("tool."+k, at+"."+k, ok)
	}
}

// toolHas reports whether the parsed tool carries source key k: as
// itself, under its canonical name, or as a documented inert key.
func toolHas(tool map[string]any, k string) bool {
	if tool == nil {
		return false
	}
	if _, ok := tool[k]; ok {
		return true
	}
	kind, _ := tool["kind"].(string) // for a workbook call, the entry's kind
	if g := groupOf(kind, k); g != nil && g.canonical != "" {
		_, ok := tool[g.canonical]
		return ok
	}
	_, inert := toolKeyTable[kind].inert[k]
	return inert
}

func (w *walker) policy(src map[string]any, p *Policy, at string) {
	rules, _ := src["rules"].([]any)
	if p == nil || len(p.Rules) != len(rules) {
		w.need("", at+".rules", false)
		return
	}
	for i, r := range rules {
		rm := asMap(r)
		then := asMap(rm["then"])
		if e, ok := rm["else"]; ok && asMap(e) != nil {
			then = asMap(e)
			if t := asMap(asMap(e)["then"]); t != nil {
				then = t
			}
		}
		got := p.Rules[i]
		w.need("", fmt.Sprintf("%s.rules[%d].when", at, i), rm["when"] == nil || got.When != "")
		for tk, tv := range then {
			ok := map[string]bool{"do": got.Do != "", "to": got.To != "", "attempts": got.Attempts > 0, "backoff": got.Backoff != "",
				"delay": true, "set": len(got.Set) == len(asMap(tv))}[tk]
			w.need("then."+tk, fmt.Sprintf("%s.rules[%d].then.%s", at, i, tk), ok)
		}
	}
}

func (w *walker) loop(src map[string]any, l *Loop, at string) {
	for k, v := range src {
		var ok bool
		switch k {
		case "in":
			ok = l.In != ""
		case "iterator":
			ok = l.Iterator == v
		case "cursor":
			ok = true
			for ck, cv := range asMap(v) {
				c := l.Cursor
				cok := c != nil && map[string]bool{"kind": c.Kind == cv, "auth": c.Auth == cv, "claim": c.Claim == cv}[ck]
				w.need("loop.cursor."+ck, at+".cursor."+ck, cok)
			}
		case "spec":
			ok = true
			for sk, sv := range asMap(v) {
				var sok bool
				switch sk {
				case "mode":
					sok = l.Mode == sv
				case "max_in_flight":
					sok = l.MaxInFlight > 0 || l.MaxInFlightExpr != ""
				case "frame":
					sok = true
					for fk, fv := range asMap(sv) {
						f := l.Frame
						fok := map[string]bool{"max_rows": f.MaxRows == fv, "row_concurrency": f.RowConcurrency == fv, "process": f.Process == fv}[fk]
						w.need("loop.spec.frame."+fk, at+".spec.frame."+fk, fok)
					}
				case "policy":
					sok = true
					for pk := range asMap(sv) {
						w.need("loop.spec.policy."+pk, at+".spec.policy."+pk, pk == "exec" && l.Exec != "")
					}
				}
				w.need("loop.spec."+sk, at+".spec."+sk, sok)
			}
		}
		w.need("loop."+k, at+"."+k, ok)
	}
}

func (w *walker) next(src map[string]any, n *Next, at string) {
	for k, v := range src {
		switch k {
		case "spec":
			for sk, sv := range asMap(v) {
				ok := map[string]bool{"mode": n.Mode == sv, "on_no_match": n.OnNoMatch == sv}[sk]
				w.need("next.spec."+sk, at+".spec."+sk, ok)
			}
		case "arcs":
			arcs, _ := v.([]any)
			w.need("next.arcs", at+".arcs", len(arcs) == len(n.Arcs))
			for i, a := range arcs {
				if i >= len(n.Arcs) {
					break
				}
				for ak, av := range asMap(a) {
					got := n.Arcs[i]
					ok := map[string]bool{"step": got.Step == av, "when": got.When != "", "set": len(got.Set) == len(asMap(av))}[ak]
					w.need("arc."+ak, fmt.Sprintf("%s.arcs[%d].%s", at, i, ak), ok)
				}
			}
		default:
			w.need("next."+k, at+"."+k, false)
		}
	}
}
