package playbook

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxRetryAttempts bounds `attempts`: a policy that retries more often than
// this is almost certainly a typo, and would hold an execution for hours.
const MaxRetryAttempts = 100

// MaxTimeout bounds a step's `timeout`; a longer job should be split or run
// asynchronously.
const MaxTimeout = 24 * time.Hour

// workbookItem is a parsed workbook entry, resolved into the steps and
// tasks that call it.
type workbookItem struct {
	tool   map[string]any // nil when the entry is broken
	policy *Policy
	assert *Assert
	line   int
}

func (ps *parser) keychainList(n *yaml.Node) []KeychainEntry {
	const shape = "e.g. `keychain: [{name: pg, credential: pg_local}]`; templates then read keychain.pg.<field>"
	list := deref(n)
	if list.Kind != yaml.SequenceNode {
		ps.atNode(n, shape, "keychain must be a list, got %s", describe(n))
		return nil
	}
	ps.keychain = map[string]bool{}
	var out []KeychainEntry
	for _, item := range list.Content {
		if deref(item).Kind != yaml.MappingNode {
			ps.atNode(item, shape, "keychain entry must be a mapping, got %s", describe(item))
			continue
		}
		f := ps.mapping(item, "", nil)
		if ps.providerKeychain(item, f) {
			// Declared all the same, so templates reading it are not
			// reported a second time.
			if e, ok := f["name"]; ok {
				ps.keychain[deref(e.val).Value] = true
			}
			continue
		}
		ps.checkKeys(f, "in keychain entry", keychainKeys)
		k := KeychainEntry{Line: item.Line, Col: item.Column}
		e, ok := f["name"]
		if !ok {
			ps.atNode(item, shape, "keychain entry has no name")
			continue
		}
		if k.Name, ok = ps.scalar(e.val, "keychain name"); !ok {
			continue
		}
		if !identRE.MatchString(k.Name) {
			ps.atNode(e.val, "use letters, digits and _, starting with a letter or _", "invalid keychain name %q", k.Name)
			continue
		}
		if ps.keychain[k.Name] {
			ps.atNode(e.val, "keychain names must be unique", "duplicate keychain name %q", k.Name)
			continue
		}
		ps.keychain[k.Name] = true
		if e, ok := f["credential"]; ok {
			k.Credential, _ = ps.scalar(e.val, "keychain credential")
		} else {
			ps.atNode(item, "add `credential: <name of a stored credential>`", "keychain entry %q has no credential", k.Name)
		}
		if e, ok := f["kind"]; ok {
			k.Kind, _ = ps.scalar(e.val, "keychain kind")
		}
		if e, ok := f["scope"]; ok {
			k.Scope, _ = ps.scalar(e.val, "keychain scope")
		}
		out = append(out, k)
	}
	return out
}

var keychainRefRE = regexp.MustCompile(`\bkeychain\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"]([^'"]*)['"]\s*\])`)

// checkKeychainRefs reports templates under n that read a keychain entry
// the playbook does not declare: at run time it would only be an
// undefined-variable error on a worker.
func (ps *parser) checkKeychainRefs(n *yaml.Node, owner string) {
	walkScalars(n, map[*yaml.Node]bool{}, func(s *yaml.Node) {
		if !strings.Contains(s.Value, "{{") && !strings.Contains(s.Value, "{%") {
			return
		}
		for _, m := range keychainRefRE.FindAllStringSubmatch(s.Value, -1) {
			name := m[1] + m[2]
			if !ps.keychain[name] {
				ps.atNode(s, fmt.Sprintf("declare it: `keychain: [{name: %s, credential: <stored credential>}]`", name),
					"%s: template reads keychain.%s, which the playbook does not declare", owner, name)
			}
		}
	})
}

func walkScalars(n *yaml.Node, seen map[*yaml.Node]bool, fn func(*yaml.Node)) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	switch n.Kind {
	case yaml.ScalarNode:
		fn(n)
	case yaml.AliasNode:
		walkScalars(n.Alias, seen, fn)
	default:
		for _, c := range n.Content {
			walkScalars(c, seen, fn)
		}
	}
}

// workbookList parses the top-level workbook: named tools that steps and
// tasks call with `kind: workbook, name: <entry>`.
func (ps *parser) workbookList(n *yaml.Node) {
	const shape = "e.g. `workbook: [{name: score, tool: {kind: python, code: ...}}]`"
	list := deref(n)
	if list.Kind != yaml.SequenceNode {
		ps.atNode(n, shape, "workbook must be a list, got %s", describe(n))
		return
	}
	ps.workbook = map[string]*workbookItem{}
	for _, item := range list.Content {
		if deref(item).Kind != yaml.MappingNode {
			ps.atNode(item, shape, "workbook entry must be a mapping, got %s", describe(item))
			continue
		}
		f := ps.mapping(item, "in workbook entry", workbookKeys)
		e, ok := f["name"]
		if !ok {
			ps.atNode(item, shape, "workbook entry has no name")
			continue
		}
		name, ok := ps.scalar(e.val, "workbook entry name")
		if !ok {
			continue
		}
		if first := ps.workbook[name]; first != nil {
			ps.atNode(e.val, fmt.Sprintf("first defined at line %d; rename one of them", first.line), "duplicate workbook entry %q", name)
			continue
		}
		wb := &workbookItem{line: e.key.Line}
		ps.workbook[name] = wb
		if e, ok := f["desc"]; ok {
			ps.scalar(e.val, "workbook entry desc")
		}
		e, ok = f["tool"]
		if !ok {
			ps.atNode(item, "add `tool: {kind: ...}` to the entry", "workbook entry %q has no tool", name)
			continue
		}
		if deref(e.val).Kind != yaml.MappingNode {
			ps.atNode(e.val, shape, "workbook entry %q: tool must be a mapping, got %s", name, describe(e.val))
			continue
		}
		where := "workbook entry " + fmt.Sprintf("%q", name)
		if k, ok := ps.mapping(e.val, "", nil)["kind"]; ok && deref(k.val).Value == KindWorkbook {
			ps.atNode(k.val, "give the entry a real tool kind", "%s: a workbook entry cannot call another workbook entry", where)
			continue
		}
		t := ps.tool(e.val, toolLoc{owner: where, field: "tool"}, nil)
		wb.tool, wb.policy, wb.assert = t.tool, t.policy, t.assert
		// NoETL also writes assert beside the entry's tool; it means the
		// same as the tool's own.
		if a, ok := f["assert"]; ok {
			if t.assert != nil {
				ps.atNode(a.key, "keep one of them", "%s: assert is given both on the entry and in its tool; they say the same thing", where)
			} else {
				wb.assert = ps.assert(a.val, where)
			}
		}
	}
}

func (ps *parser) loop(e entry, step string) *Loop {
	const shape = "`loop: {in: \"{{ items }}\", iterator: item, spec: {mode: parallel, max_in_flight: 4}}`"
	if deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, "write "+shape, "step %q: loop must be a mapping, got %s", step, describe(e.val))
		return nil
	}
	f := ps.mapping(e.val, "in loop", loopKeys)
	l := &Loop{Iterator: DefaultIterator, Mode: LoopSequential, MaxInFlight: 1, Line: e.key.Line, Col: e.key.Column}
	cur, isCursor := f["cursor"]
	if isCursor {
		l.Cursor = ps.cursor(cur, step)
		if in, ok := f["in"]; ok {
			ps.atNode(in.key, "remove `in`: a cursor loop's rows are what its claim returns", "step %q: loop has both `in` and `cursor`", step)
		}
	} else if in, ok := f["in"]; ok {
		if d := deref(in.val); d.Kind == yaml.ScalarNode && d.ShortTag() == "!!str" && strings.Contains(d.Value, "{{") {
			l.In = d.Value
		} else {
			ps.atNode(in.val, "write a template that renders to a list, e.g. `in: \"{{ users }}\"` or `in: \"{{ [1, 2, 3] }}\"`",
				"step %q: loop.in must be a {{ }} template, got %s", step, describe(in.val))
		}
	} else {
		ps.atNode(e.key, "add `in: \"{{ <list> }}\"` (or a `cursor:` with spec.mode cursor, to drain a work table)", "step %q: loop has no `in`", step)
	}
	if it, ok := f["iterator"]; ok {
		if name, ok := ps.scalar(it.val, "loop.iterator"); ok {
			switch {
			case !identRE.MatchString(name):
				ps.atNode(it.val, "use letters, digits and _, starting with a letter or _", "step %q: invalid loop iterator %q", step, name)
			case reservedNames[name]:
				ps.atNode(it.val, "pick another name, e.g. item", "step %q: loop iterator %q is reserved", step, name)
			default:
				l.Iterator = name
			}
		}
	}
	sp, ok := f["spec"]
	if !ok || isNull(sp.val) {
		if isCursor {
			ps.atNode(cur.key, "add `spec: {mode: cursor}`", "step %q: loop.cursor needs loop.spec.mode cursor", step)
		}
		return l
	}
	if deref(sp.val).Kind != yaml.MappingNode {
		ps.atNode(sp.val, "write "+shape, "step %q: loop.spec must be a mapping, got %s", step, describe(sp.val))
		return l
	}
	sf := ps.mapping(sp.val, "in loop.spec", loopSpecKeys)
	if m, ok := sf["mode"]; ok {
		mode, _ := ps.scalar(m.val, "loop.spec.mode")
		switch mode {
		case LoopSequential, LoopParallel:
			l.Mode = mode
			if isCursor {
				ps.atNode(m.val, "write `mode: cursor`", "step %q: a loop with `cursor` runs in mode cursor, not %s", step, mode)
			}
		case "":
		case LoopCursor:
			l.Mode = mode
			if !isCursor {
				ps.atNode(m.val, "add `cursor: {kind: postgres, auth: <credential>, claim: <UPDATE ... RETURNING>}` to the loop, or use mode sequential or parallel",
					"step %q: loop mode cursor needs loop.cursor", step)
			}
		default:
			ps.atNode(m.val, "use sequential (one at a time, in order), parallel, or cursor (with loop.cursor)", "step %q: unknown loop mode %q", step, mode)
		}
	}
	if _, has := sf["mode"]; isCursor && !has {
		ps.atNode(sp.key, "add `mode: cursor` to loop.spec", "step %q: loop.cursor needs loop.spec.mode cursor", step)
		l.Mode = LoopCursor // read the rest of the spec as meant
	}
	if l.Mode == LoopParallel {
		l.MaxInFlight = DefaultMaxInFlight
	}
	if l.Mode == LoopCursor {
		l.Frame = defaultFrame
	}
	if fr, ok := sf["frame"]; ok {
		if l.Mode != LoopCursor {
			ps.atNode(fr.key, "remove frame, or make the loop a cursor loop", "step %q: loop.spec.frame belongs to cursor loops (mode cursor)", step)
		} else {
			l.Frame = ps.frame(fr, step)
		}
	}
	l.Exec = LoopExecDistributed
	if p, ok := sf["policy"]; ok && !isNull(p.val) {
		if deref(p.val).Kind != yaml.MappingNode {
			ps.atNode(p.val, "write `policy: {exec: distributed}`", "step %q: loop.spec.policy must be a mapping, got %s", step, describe(p.val))
		} else {
			pf := ps.mapping(p.val, "in loop.spec.policy", loopPolicyKeys)
			if e, ok := pf["exec"]; ok {
				switch exec, _ := ps.scalar(e.val, "loop.spec.policy.exec"); exec {
				case LoopExecDistributed, LoopExecLocal:
					l.Exec = exec
				case "":
				default:
					ps.atNode(e.val, "use distributed or local", "step %q: unknown loop.spec.policy.exec %q", step, exec)
				}
			}
			if e, ok := pf["results"]; ok && deref(e.val).Kind != yaml.MappingNode && !isNull(e.val) {
				// NoETL's LoopPolicy has no results key (it ignores it);
				// Millrace keeps a loop's results in item order anyway.
				ps.atNode(e.val, "write a mapping, e.g. `results: {preserve_order: true}`", "step %q: loop.spec.policy.results must be a mapping, got %s", step, describe(e.val))
			}
		}
	}
	if m, ok := sf["max_in_flight"]; ok {
		var n int
		d := deref(m.val)
		switch {
		case d.Kind == yaml.ScalarNode && d.ShortTag() == "!!str" && strings.Contains(d.Value, "{{"):
			// NoETL renders it when the loop starts; so does Millrace.
			if l.Mode != LoopParallel && l.Mode != LoopCursor {
				ps.atNode(m.val, "add `mode: parallel`, or remove max_in_flight", "step %q: max_in_flight needs loop.spec.mode parallel; a sequential loop runs one iteration at a time", step)
			}
			l.MaxInFlightExpr = d.Value
		case d.Kind != yaml.ScalarNode || d.ShortTag() != "!!int" || d.Decode(&n) != nil || n < 1:
			ps.atNode(m.val, "write a whole number of iterations, e.g. `max_in_flight: 4`", "step %q: loop.spec.max_in_flight must be an integer >= 1, got %s", step, describe(m.val))
		case l.Mode != LoopParallel && l.Mode != LoopCursor && n != 1:
			ps.atNode(m.val, "add `mode: parallel`, or remove max_in_flight", "step %q: max_in_flight %d needs loop.spec.mode parallel; a sequential loop runs one iteration at a time", step, n)
		default:
			l.MaxInFlight = n
		}
	}
	return l
}

// set parses a `set` mapping: target -> value (a template). Targets are
// names or ctx.<name>, optionally dotted into a mapping.
func (ps *parser) set(n *yaml.Node, what string) map[string]any {
	if isNull(n) {
		return nil
	}
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, "e.g. `set: {ctx.total: \"{{ result.count }}\"}`", "%s must be a mapping, got %s", what, describe(n))
		return nil
	}
	f := ps.mapping(n, "", nil)
	out := make(map[string]any, len(f))
	for _, k := range sortedKeys(f) {
		e := f[k]
		root := strings.SplitN(strings.TrimPrefix(k, "ctx."), ".", 2)[0]
		switch {
		case !setKeyRE.MatchString(k):
			ps.atNode(e.key, "write a name or ctx.<name>, e.g. `ctx.total`", "%s: invalid target %q", what, k)
			continue
		case root == IterScope && k != IterScope && ps.inTasks:
			// iter.<name>: the task list's per-run scope (NoETL's).
		case root == IterScope && k != IterScope:
			ps.atNode(e.key, "iter.<name> is the scope of one run of a task list (`tool: [...]`), set by its tasks and their policy rules; here write ctx.<name>",
				"%s: target %q is outside a task list", what, k)
			continue
		case reservedNames[root] || k == "ctx":
			ps.atNode(e.key, "pick another name", "%s: target %q is reserved", what, k)
			continue
		}
		out[k] = ps.value(e.val)
		ps.checkKeychainRefs(e.val, strings.SplitN(what, ":", 2)[0])
	}
	return out
}

func (ps *parser) timeout(n *yaml.Node, step string) time.Duration {
	d := deref(n)
	var secs float64
	if d.Kind != yaml.ScalarNode || (d.ShortTag() != "!!int" && d.ShortTag() != "!!float") || d.Decode(&secs) != nil ||
		math.IsNaN(secs) || secs <= 0 || secs > MaxTimeout.Seconds() {
		ps.atNode(n, fmt.Sprintf("write seconds, e.g. `timeout: 30` (at most %d)", int(MaxTimeout.Seconds())),
			"step %q: timeout must be a positive number of seconds, got %s", step, describe(n))
		return 0
	}
	return time.Duration(secs * float64(time.Second))
}

// liftSpec reads a tool's `spec`. NoETL's v10 canonical shape writes the
// tool's config under spec (`tool: {kind: http, spec: {url: ..., policy:
// ...}}`); those keys are moved into f, the tool's own keys, so both shapes
// parse to the same tool, and a key given in both places is refused. What
// stays is spec.policy, returned as its parsed Policy (nil when absent).
func (ps *parser) liftSpec(f map[string]entry, loc toolLoc, kind string, allowed []string) (pol *Policy, has bool) {
	e, ok := f["spec"]
	if !ok {
		return nil, false
	}
	spec := deref(e.val)
	if spec.Kind != yaml.MappingNode {
		ps.atNode(e.val, "write `spec: {policy: {rules: [...]}}`", "%s: %s.spec must be a mapping, got %s", loc.owner, loc.field, describe(e.val))
		return nil, false
	}
	known := slices.Concat(toolSpecKeys, allowed)
	sf := ps.mapping(spec, "", nil)
	for _, k := range sortedKeys(sf) {
		se := sf[k]
		switch {
		case k == "policy":
			has = true
		case slices.Contains(allowed, k):
			if first, dup := f[k]; dup {
				ps.atNode(se.key, fmt.Sprintf("keep one: remove it here or beside kind at line %d", first.key.Line),
					"%s: key %q is given both beside kind and under %s.spec", loc.owner, k, loc.field)
				continue
			}
			f[k] = se
		case k == "kind":
			ps.atNode(se.key, "write kind beside spec: `tool: {kind: "+kind+", spec: {...}}`", "%s: kind under %s.spec", loc.owner, loc.field)
		case unsupportedHint("in tool.spec", k) != "":
			ps.atNode(se.key, unsupportedHint("in tool.spec", k), "unsupported NoETL key %q in %s.spec", k, loc.field)
		default:
			hint := fmt.Sprintf("a %s tool's spec holds policy and the tool's own keys: %s", kind, strings.Join(known, ", "))
			if s := nearest(k, known); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			ps.atNode(se.key, hint, "unknown key %q in %s.spec", k, loc.field)
		}
	}
	if !has {
		return nil, false
	}
	pol = ps.policy(sf["policy"].val, loc.owner, loc.field+".spec.policy")
	if pol != nil {
		pol.Step = loc.step
	}
	return pol, true
}

func (ps *parser) policy(n *yaml.Node, owner, field string) *Policy {
	const shape = "`policy: {rules: [{when: \"{{ output.status == 'error' }}\", then: {do: retry, attempts: 3}}, {else: {then: {do: continue}}}]}`"
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, "write "+shape, "%s: %s must be a mapping, got %s", owner, field, describe(n))
		return nil
	}
	f := ps.mapping(n, "in policy", policyKeys)
	e, ok := f["rules"]
	if !ok {
		if _, admit := f["admit"]; !admit {
			ps.atNode(n, "write "+shape, "%s: %s has no rules", owner, field)
		}
		return nil
	}
	list := deref(e.val)
	if list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		ps.atNode(e.val, "write "+shape, "%s: %s.rules must be a non-empty list, got %s", owner, field, describe(e.val))
		return nil
	}
	p := &Policy{Field: field}
	elseAt := 0
	for i, item := range list.Content {
		where := fmt.Sprintf("%s.rules[%d]", field, i)
		if elseAt > 0 {
			ps.atNode(item, "move the else rule last", "%s: %s comes after the else rule at line %d and never applies", owner, where, elseAt)
		}
		if deref(item).Kind != yaml.MappingNode {
			ps.atNode(item, "write "+shape, "%s: %s must be a mapping, got %s", owner, where, describe(item))
			continue
		}
		rf := ps.mapping(item, "in policy rule", ruleKeys)
		r := Rule{Line: item.Line, Col: item.Column}
		w, hasWhen := rf["when"]
		el, hasElse := rf["else"]
		then, hasThen := rf["then"]
		thenAt := where + ".then"
		switch {
		case hasWhen && hasElse:
			ps.atNode(item, "split them: a rule is `{when: ..., then: ...}` or `{else: {then: ...}}`", "%s: %s has both when and else", owner, where)
			continue
		case hasElse && hasThen && isNull(el.val):
			// `- else:` with then beside it (NoETL's rule model takes a
			// rule without when as its default, so this is one too).
			r.Else = true
			elseAt = item.Line
		case hasElse:
			r.Else = true
			elseAt = item.Line
			if hasThen {
				ps.atNode(then.key, "indent then under else: `- else: {then: {do: continue}}`", "%s: %s: then belongs inside else", owner, where)
				continue
			}
			if deref(el.val).Kind != yaml.MappingNode {
				ps.atNode(el.val, "write `- else: {then: {do: continue}}`", "%s: %s.else must be a mapping, got %s", owner, where, describe(el.val))
				continue
			}
			var ok bool
			if then, thenAt, ok = ps.elseThen(el, owner, where); !ok {
				continue
			}
		case hasWhen:
			if r.When, _ = ps.scalar(w.val, where+".when"); r.When == "" {
				continue
			}
			if !hasThen {
				ps.atNode(item, "add `then: {do: retry|fail|continue}`", "%s: %s has no then", owner, where)
				continue
			}
		default:
			ps.atNode(item, "write "+shape, "%s: %s needs when (or else) and then", owner, where)
			continue
		}
		if ps.then(then.val, owner, thenAt, &r) {
			p.Rules = append(p.Rules, r)
		}
	}
	return p
}

// elseThen returns the `then` of an else rule and the field path its
// problems name. NoETL also writes the then keys directly under else
// (`- else: {do: continue}`); that shorthand means the same as
// `- else: {then: {do: continue}}`.
func (ps *parser) elseThen(el entry, owner, where string) (entry, string, bool) {
	ef := ps.mapping(el.val, "", nil)
	var direct []string
	for _, k := range sortedKeys(ef) {
		if slices.Contains(thenKeys, k) {
			direct = append(direct, k)
		}
	}
	then, hasThen := ef["then"]
	switch {
	case len(direct) > 0 && hasThen:
		ps.atNode(ef[direct[0]].key, "put them all under then, or drop then: `- else: {do: continue}`",
			"%s: %s.else has both then and %s", owner, where, strings.Join(direct, ", "))
		return entry{}, "", false
	case len(direct) > 0:
		return el, where + ".else", true
	}
	ps.checkKeys(ef, "in else rule", elseKeys)
	if !hasThen && len(ef) == 0 {
		ps.atNode(el.val, "write `- else: {then: {do: continue}}`", "%s: %s.else has no then", owner, where)
	}
	return then, where + ".then", hasThen
}

func (ps *parser) then(n *yaml.Node, owner, where string, r *Rule) bool {
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, "write `then: {do: retry, attempts: 3}`", "%s: %s must be a mapping, got %s", owner, where, describe(n))
		return false
	}
	f := ps.mapping(n, "in policy then", thenKeys)
	ok := true
	if e, has := f["do"]; has {
		r.Do, _ = ps.scalar(e.val, where+".do")
		switch r.Do {
		case DoRetry, DoFail, DoContinue, DoBreak:
		case DoJump:
			if !ps.inTasks {
				ps.atNode(e.val, "jump moves between the tasks of a task list (`tool: [{name: a, ...}, ...]`); on a single tool use retry, continue or fail",
					"%s: %s.do jump outside a task list", owner, where)
				ok = false
			}
		case "":
			ok = false
		default:
			ps.atNode(e.val, "use retry, fail, continue, break or jump (with `to: <task>`)", "%s: %s.do %q is not an action", owner, where, r.Do)
			ok = false
		}
	} else {
		ps.atNode(n, "add `do: retry|fail|continue|break|jump`", "%s: %s has no do", owner, where)
		ok = false
	}
	if e, has := f["to"]; has {
		r.To, _ = ps.scalar(e.val, where+".to")
		if r.Do != DoJump && r.Do != "" {
			ps.atNode(e.key, "`to` names the task a `do: jump` goes to; write `do: jump`, or remove `to`", "%s: %s.to only applies to do: jump", owner, where)
			ok = false
		}
	} else if r.Do == DoJump && ps.inTasks {
		ps.atNode(n, "add `to: <task name>`, the task of this list to go on at", "%s: %s: do: jump has no to", owner, where)
		ok = false
	}
	for _, k := range []string{"attempts", "backoff", "delay"} {
		if e, has := f[k]; has && r.Do != DoRetry && r.Do != "" {
			ps.atNode(e.key, "remove it, or use `do: retry`", "%s: %s.%s only applies to do: retry", owner, where, k)
			ok = false
		}
	}
	if e, has := f["attempts"]; has {
		d := deref(e.val)
		if d.Kind != yaml.ScalarNode || d.ShortTag() != "!!int" || d.Decode(&r.Attempts) != nil || r.Attempts < 1 || r.Attempts > MaxRetryAttempts {
			ps.atNode(e.val, fmt.Sprintf("the total number of runs, 1 to %d, e.g. `attempts: 3`", MaxRetryAttempts),
				"%s: %s.attempts must be an integer from 1 to %d, got %s", owner, where, MaxRetryAttempts, describe(e.val))
			ok = false
		}
	}
	if e, has := f["backoff"]; has {
		r.Backoff, _ = ps.scalar(e.val, where+".backoff")
		if !slices.Contains([]string{BackoffFixed, BackoffExponential, BackoffLinear, BackoffNone}, r.Backoff) {
			if r.Backoff != "" {
				ps.atNode(e.val, "use fixed (delay every time), exponential (delay doubles each attempt), linear (delay × attempt) or none (no delay)", "%s: %s.backoff %q is unknown", owner, where, r.Backoff)
			}
			ok = false
		}
	}
	if e, has := f["delay"]; has {
		d := deref(e.val)
		var secs float64
		if d.Kind != yaml.ScalarNode || (d.ShortTag() != "!!int" && d.ShortTag() != "!!float") || d.Decode(&secs) != nil ||
			math.IsNaN(secs) || secs < 0 || secs > MaxTimeout.Seconds() {
			ps.atNode(e.val, "seconds before the next attempt, e.g. `delay: 0.5`", "%s: %s.delay must be a non-negative number of seconds, got %s", owner, where, describe(e.val))
			ok = false
		} else {
			r.Delay = time.Duration(secs * float64(time.Second))
		}
	}
	if r.Do == DoRetry {
		if _, has := f["attempts"]; !has {
			r.Attempts = DefaultRetryAttempts
		}
		if _, has := f["delay"]; !has {
			r.Delay = DefaultRetryDelay
		}
		if r.Backoff == "" {
			r.Backoff = BackoffFixed
		}
	}
	if e, has := f["set"]; has {
		r.Set = ps.set(e.val, fmt.Sprintf("%s: %s.set", owner, where))
	}
	return ok
}

func (ps *parser) assert(n *yaml.Node, owner string) *Assert {
	const shape = "`assert: {expects: [input_name], returns: [result_key]}`"
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, "write "+shape, "%s: assert must be a mapping, got %s", owner, describe(n))
		return nil
	}
	f := ps.mapping(n, "in assert", assertKeys)
	a := &Assert{}
	names := func(key string) []string {
		e, ok := f[key]
		if !ok || isNull(e.val) {
			return nil
		}
		if deref(e.val).Kind != yaml.SequenceNode {
			ps.atNode(e.val, "write "+shape, "%s: assert.%s must be a list of names, got %s", owner, key, describe(e.val))
			return nil
		}
		var out []string
		for _, c := range deref(e.val).Content {
			if s, ok := ps.scalar(c, "assert."+key+" item"); ok {
				out = append(out, s)
			}
		}
		return out
	}
	a.Expects, a.Returns = names("expects"), names("returns")
	return a
}

// checkJumps reports `do: jump` rules whose `to` names no task of the list.
func (ps *parser) checkJumps(tasks []Task, step string) {
	names := make([]string, len(tasks))
	for i, t := range tasks {
		names[i] = t.Name
	}
	for _, t := range tasks {
		if t.Policy == nil {
			continue
		}
		for _, r := range t.Policy.Rules {
			if r.Do != DoJump || r.To == "" || slices.Contains(names, r.To) {
				continue
			}
			hint := "the tasks of this list are: " + strings.Join(names, ", ")
			if s := nearest(r.To, names); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			ps.at(r.Line, r.Col, hint, "step %q task %q: jump to %q, which is not a task of this list", step, t.Name, r.To)
		}
	}
}
