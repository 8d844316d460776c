package playbook

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

func (ps *parser) workflow(n *yaml.Node, pb *Playbook) {
	list := deref(n)
	if list.Kind != yaml.SequenceNode {
		ps.atNode(n, "workflow is a list of steps: `workflow: [ {step: start, tool: {kind: ...}} ]`", "workflow must be a list, got %s", describe(n))
		return
	}
	if len(list.Content) == 0 {
		ps.atNode(n, "add at least one step", "workflow is empty")
		return
	}
	for _, item := range list.Content {
		if s := ps.step(item); s != nil {
			if first, dup := pb.ByName[s.Name]; dup {
				ps.at(s.Line, s.Col, fmt.Sprintf("first defined at line %d; rename one of them", first.Line), "duplicate step name %q", s.Name)
				continue
			}
			pb.Steps = append(pb.Steps, s)
			pb.ByName[s.Name] = s
		}
	}
	// Arc targets are checked once every step name is known.
	for _, s := range pb.Steps {
		for _, a := range s.Next.arcsOrNil() {
			if a.Step != "" && pb.ByName[a.Step] == nil {
				ps.at(a.Line, a.Col, suggestName(a.Step, pb.Steps), "step %q: arc targets unknown step %q", s.Name, a.Step)
			}
		}
	}
}

// step parses one workflow item. It returns nil when the item has no usable
// name; other problems are recorded and a partial step is still returned so
// graph checks can run.
func (ps *parser) step(item *yaml.Node) *Step {
	if deref(item).Kind != yaml.MappingNode {
		ps.atNode(item, "each workflow item is a mapping starting with `- step: <name>`", "workflow item must be a mapping, got %s", describe(item))
		return nil
	}
	f := ps.mapping(item, "in step", nil)
	if e, ok := f["spec"]; ok {
		ps.stepSpec(e)
		delete(f, "spec")
	}
	ps.checkKeys(f, "in step", stepKeys)
	s := &Step{Line: item.Line, Col: item.Column}
	e, ok := f["step"]
	if !ok {
		ps.atNode(item, "add `step: <name>` to the item", "workflow item has no step name")
		return nil
	}
	s.Line, s.Col = e.key.Line, e.key.Column
	name, ok := ps.scalar(e.val, "step")
	if !ok {
		return nil
	}
	if !stepNameRE.MatchString(name) {
		ps.atNode(e.val, "start with a letter or _, then letters, digits, _ or -", "invalid step name %q", name)
		return nil
	}
	if reservedNames[name] {
		ps.atNode(e.val, "templates use {{ "+name+" }} for something else; rename the step", "step name %q is reserved", name)
		return nil
	}
	s.Name = name
	if e, ok := f["desc"]; ok {
		s.Desc, _ = ps.scalar(e.val, "desc")
	}
	var input *stepInput
	if e, ok := f["input"]; ok {
		input = ps.stepInput(e, name)
	}
	if e, ok := f["output"]; ok {
		ps.output(e.val, fmt.Sprintf("step %q", name))
	}
	if e, ok := f["tool"]; ok {
		ps.stepTool(e.val, s, input)
	} else {
		// NoETL's model makes tool optional, but its validator refuses a
		// step without one ("use kind: noop for pure routing"); so does
		// Millrace.
		ps.at(s.Line, s.Col, "add `tool: {kind: ...}`; a step that only routes is `tool: {kind: noop}`",
			"step %q has no tool; NoETL refuses this too: every step runs a tool", name)
	}
	if e, ok := f["loop"]; ok {
		s.Loop = ps.loop(e, name)
	}
	if e, ok := f["set"]; ok {
		s.Set = ps.set(e.val, fmt.Sprintf("step %q: set", name))
	}
	if e, ok := f["timeout"]; ok {
		s.Timeout = ps.timeout(e.val, name)
	}
	if e, ok := f["pool"]; ok {
		s.Pool = ps.pool(e.val, name)
	}
	if e, ok := f["next"]; ok && !isNull(e.val) {
		s.Next = ps.next(e.val, name)
	}
	return s
}

// stepSpec refuses a step-level spec, one problem per construct: NoETL's
// admission rules, and anything else.
func (ps *parser) stepSpec(e entry) {
	const hint = "a tool's policy goes under the tool: `tool: {kind: ..., spec: {policy: {rules: [...]}}}`; a time limit is the step's `timeout:`"
	spec := deref(e.val)
	if spec.Kind != yaml.MappingNode {
		ps.atNode(e.key, hint, "unsupported NoETL key \"spec\" in step")
		return
	}
	var other []string
	f := ps.mapping(spec, "in step spec", nil)
	for _, k := range sortedKeys(f) {
		pol := deref(f[k].val)
		if k == "policy" && pol.Kind == yaml.MappingNode {
			pf := ps.mapping(pol, "in step spec.policy", nil)
			for _, pk := range sortedKeys(pf) {
				if pk == "admit" {
					ps.admit(pf[pk])
				} else {
					other = append(other, "policy."+pk)
				}
			}
			continue
		}
		other = append(other, k)
	}
	switch {
	case len(other) > 0:
		ps.atNode(e.key, hint, "unsupported NoETL key \"spec\" in step (holding %s)", strings.Join(other, ", "))
	case len(f) == 0:
		ps.atNode(e.key, hint, "unsupported NoETL key \"spec\" in step")
	}
}

// admit checks NoETL's step admission rules and warns that they are not
// applied: NoETL validates spec.policy.admit but its engine never evaluates
// it, so the step runs whenever an arc reaches it. Millrace does the same
// and says so, rather than refuse a playbook NoETL runs.
func (ps *parser) admit(e entry) {
	const shape = "write `admit: {rules: [{when: ..., then: {allow: true}}, {else: {then: {allow: false}}}]}`"
	if deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, shape, "step spec.policy.admit must be a mapping, got %s", describe(e.val))
		return
	}
	f := ps.mapping(e.val, "in spec.policy.admit", []string{"mode", "rules"})
	if r, ok := f["rules"]; ok && deref(r.val).Kind != yaml.SequenceNode {
		ps.atNode(r.val, shape, "step spec.policy.admit.rules must be a list, got %s", describe(r.val))
	}
	ps.warns = append(ps.warns, Problem{File: ps.file, Line: e.key.Line, Col: e.key.Column, Warning: true, Hint: hintAdmit,
		Msg: "spec.policy.admit is not applied: NoETL checks admission rules but its engine does not enforce them, and neither does Millrace; the step runs whenever an arc reaches it"})
}

// stepInput is a step-level `input` (NoETL writes it beside `tool`): values
// merged into the input of the step's tool, or of each of its tasks that
// takes input, the tool's own keys winning.
type stepInput struct {
	key  *yaml.Node
	vals map[string]any
}

func (ps *parser) stepInput(e entry, step string) *stepInput {
	if isNull(e.val) {
		return nil
	}
	if deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, "e.g. `input: {user: \"{{ start.data }}\"}`", "step %q: input must be a mapping, got %s", step, describe(e.val))
		return nil
	}
	vals, ok := ps.value(e.val).(map[string]any)
	if !ok {
		return nil
	}
	ps.checkKeychainRefs(e.val, fmt.Sprintf("step %q", step))
	return &stepInput{key: e.key, vals: vals}
}

// inputKinds lists the tool kinds that take `input`, for hints.
func (ps *parser) inputKinds() string {
	var out []string
	for _, k := range ps.kindNames() {
		if slices.Contains(ps.kinds[k], "input") {
			out = append(out, k)
		}
	}
	return strings.Join(out, ", ")
}

// stepTool parses a step's `tool`: one mapping, or a list of named tasks.
// A step-level input that no tool of the step can take is refused.
func (ps *parser) stepTool(n *yaml.Node, s *Step, input *stepInput) {
	switch deref(n).Kind {
	case yaml.MappingNode:
		t := ps.tool(n, toolLoc{owner: fmt.Sprintf("step %q", s.Name), step: s.Name, field: "tool", input: input}, nil)
		s.Tool, s.Policy, s.Assert = t.tool, t.policy, t.assert
		if input != nil && t.tool != nil && !t.tookInput {
			ps.atNode(input.key, "pass the values in the tool's own keys, or use a tool that takes input ("+ps.inputKinds()+")",
				"step %q: input has nowhere to go: a %s tool takes no input", s.Name, t.kind)
		}
	case yaml.SequenceNode:
		var kinds []string
		s.Tasks, kinds = ps.tasks(n, s.Name, input)
		if input != nil && len(kinds) > 0 {
			ps.atNode(input.key, "pass the values in the tasks' own keys, or add a task that takes input ("+ps.inputKinds()+")",
				"step %q: input has nowhere to go: none of the step's tasks takes input (%s)", s.Name, strings.Join(kinds, ", "))
		}
	default:
		ps.atNode(n, "e.g. `tool: {kind: http, url: ...}` or a list of named tasks `tool: [{name: a, kind: ...}]`",
			"step %q: tool must be a mapping or a list, got %s", s.Name, describe(n))
	}
}

// tasks parses a step's task list, merging input into each task that takes
// it. When input is given and no parsed task took it, refusedKinds lists the
// tasks' kinds (in order, once each) for the caller's problem.
func (ps *parser) tasks(n *yaml.Node, step string, input *stepInput) (tasks []Task, refusedKinds []string) {
	list := deref(n)
	if len(list.Content) == 0 {
		ps.atNode(n, "add a task `- {name: a, kind: ...}` or use a single `tool: {kind: ...}`", "step %q: tool list is empty", step)
		return nil, nil
	}
	taken := false
	seen := map[string]int{}
	ps.inTasks = true
	defer func() { ps.inTasks = false }()
	for _, item := range list.Content {
		if deref(item).Kind != yaml.MappingNode {
			ps.atNode(item, "each task is a mapping `- name: <task>\n  kind: ...`", "step %q: task must be a mapping, got %s", step, describe(item))
			continue
		}
		f := ps.mapping(item, "", nil)
		task := Task{Line: item.Line, Col: item.Column}
		e, ok := f["name"]
		if !ok {
			ps.atNode(item, "add `name: <task>`; later tasks read this task's result by its name", "step %q: task has no name", step)
			continue
		}
		task.Line, task.Col = e.key.Line, e.key.Column
		if task.Name, ok = ps.scalar(e.val, "task name"); !ok {
			continue
		}
		switch {
		case !identRE.MatchString(task.Name):
			ps.atNode(e.val, "use letters, digits and _, starting with a letter or _ (templates read it as a variable)", "step %q: invalid task name %q", step, task.Name)
			continue
		case reservedNames[task.Name]:
			ps.atNode(e.val, "templates use {{ "+task.Name+" }} for something else; rename the task", "step %q: task name %q is reserved", step, task.Name)
			continue
		}
		if first, dup := seen[task.Name]; dup {
			ps.atNode(e.val, fmt.Sprintf("first defined at line %d; task names must be unique within a step", first), "step %q: duplicate task name %q", step, task.Name)
			continue
		}
		seen[task.Name] = task.Line
		field := "tool[" + task.Name + "]"
		t := ps.tool(item, toolLoc{owner: fmt.Sprintf("step %q", step), step: step, field: field, task: task.Name, input: input}, []string{"name", "set"})
		task.Tool, task.Policy, task.Assert = t.tool, t.policy, t.assert
		if t.tool != nil && !slices.Contains(refusedKinds, t.kind) {
			refusedKinds = append(refusedKinds, t.kind)
		}
		taken = taken || t.tookInput
		if e, ok := f["set"]; ok {
			task.Set = ps.set(e.val, fmt.Sprintf("step %q task %q: set", step, task.Name))
		}
		tasks = append(tasks, task)
	}
	ps.checkJumps(tasks, step)
	if taken {
		refusedKinds = nil
	}
	return tasks, refusedKinds
}

// parsedTool is a tool mapping split into what the worker runs and what the
// engine interprets.
type parsedTool struct {
	tool   map[string]any
	policy *Policy
	assert *Assert
	kind   string // the tool kind (a workbook entry's own kind for a call)
	// tookInput is true when the tool takes input, so a step-level input
	// was merged into it (or refused there).
	tookInput bool
}

// toolLoc says where a tool is, for problems and for its Policy.
type toolLoc struct {
	owner string     // `step "x"` or `workbook entry "y"`, prefixing messages
	step  string     // the step name ("" in the workbook)
	field string     // tool or tool[task]
	task  string     // the task name in a task list; it also names the workbook entry of a workbook task
	input *stepInput // the step's input, merged into the tool's; nil if none
}

// tool parses one tool mapping: its kind, its kind's keys, spec.policy and
// assert. extra are keys the caller handles.
func (ps *parser) tool(n *yaml.Node, loc toolLoc, extra []string) parsedTool {
	var out parsedTool
	f := ps.mapping(n, "", nil)
	e, ok := f["kind"]
	if !ok {
		ps.atNode(n, "add `kind: <"+strings.Join(ps.kindNames(), "|")+">` to the tool", "%s: %s has no kind", loc.owner, loc.field)
		return out
	}
	kind, ok := ps.scalar(e.val, loc.field+".kind")
	if !ok {
		return out
	}
	if kind == KindWorkbook {
		return ps.workbookCall(n, f, loc, extra)
	}
	allowed, known := ps.kinds[kind]
	if _, refused := refusedKinds[kind]; refused && !known {
		ps.refusedKindProblem(e.val, loc.owner, kind)
		return out
	}
	if !known {
		hint := "known kinds: " + strings.Join(ps.kindNames(), ", ")
		if s := nearest(kind, ps.kindNames()); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		ps.atNode(e.val, hint, "%s: unknown tool kind %q", loc.owner, kind)
		return out
	}
	out.kind = kind
	out.policy, _ = ps.liftSpec(f, loc, kind, allowed)
	if kind == "playbook" {
		out.policy = ps.retryPolicy(f, loc, out.policy)
	}
	ps.toolKeys(f, kind, loc)
	ps.checkToolKeys(f, "in "+kind+" tool", kind, slices.Concat([]string{"kind"}, allowed, toolExtraKeys, extra))
	if e, ok := f["output"]; ok {
		ps.output(e.val, loc.owner)
	}
	out.tool = map[string]any{}
	for k, e := range f {
		if slices.Contains(allowed, k) || k == "kind" {
			out.tool[k] = ps.value(e.val)
			ps.checkKeychainRefs(e.val, loc.owner)
		}
	}
	if loc.input != nil && slices.Contains(allowed, "input") {
		out.tookInput = true
		var at *yaml.Node
		if e, ok := f["input"]; ok {
			at = e.val
		}
		if in, ok := ps.mergeInput(loc.input.vals, out.tool["input"], at, loc); ok {
			out.tool["input"] = in
		}
	}
	if e, ok := f["assert"]; ok {
		out.assert = ps.assert(e.val, loc.owner)
	}
	return out
}

// mergeInput merges a tool's own input, over (nil when it has none), into
// a copy of the step's input vals, over's keys winning. A template or other
// non-mapping input cannot be merged key by key: it is refused at its node
// at, or at the step's input when at is nil.
func (ps *parser) mergeInput(vals map[string]any, over any, at *yaml.Node, loc toolLoc) (map[string]any, bool) {
	merged := maps.Clone(vals)
	switch o := over.(type) {
	case nil:
	case map[string]any:
		maps.Copy(merged, o)
	default:
		if at == nil {
			at = loc.input.key
		}
		ps.atNode(at, "write the tool's input as a mapping, or move the step's input keys into it",
			"%s: %s.input is not a mapping, so the step's input cannot be merged into it", loc.owner, loc.field)
		return nil, false
	}
	return merged, true
}

// workbookCall resolves `kind: workbook, name: X` to workbook entry X: the
// entry's tool, with the caller's keys laid over it (mappings such as
// input merged key by key, the caller winning).
func (ps *parser) workbookCall(n *yaml.Node, f map[string]entry, loc toolLoc, extra []string) parsedTool {
	var out parsedTool
	name := loc.task
	if name == "" {
		e, ok := f["name"]
		if !ok {
			ps.atNode(n, "add `name: <workbook entry>`", "%s: workbook tool has no name", loc.owner)
			return out
		}
		if name, ok = ps.scalar(e.val, loc.field+".name"); !ok {
			return out
		}
		extra = append(slices.Clone(extra), "name")
	}
	wb := ps.workbook[name]
	if wb == nil {
		hint := "add it under the top-level `workbook:` list"
		if s := nearest(name, slices.Sorted(maps.Keys(ps.workbook))); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		ps.atNode(n, hint, "%s: workbook entry %q does not exist", loc.owner, name)
		return out
	}
	if wb.tool == nil {
		return out // the entry itself is broken, and reported where it is defined
	}
	kind := wb.tool["kind"].(string)
	allowed := ps.kinds[kind]
	out.kind = kind
	callPolicy, hasPolicy := ps.liftSpec(f, loc, kind, allowed)
	if kind == "playbook" {
		if _, has := f["retry"]; has {
			callPolicy, hasPolicy = ps.retryPolicy(f, loc, callPolicy), true
		}
	}
	given := ps.toolKeys(f, kind, loc)
	ps.checkToolKeys(f, fmt.Sprintf("in call of workbook entry %q (a %s tool)", name, kind), kind, slices.Concat([]string{"kind"}, allowed, toolExtraKeys, extra))
	if e, ok := f["output"]; ok {
		ps.output(e.val, loc.owner)
	}
	out.tool = maps.Clone(wb.tool)
	overrideGroups(out.tool, given)
	out.policy, out.assert = wb.policy, wb.assert
	if hasPolicy {
		out.policy = callPolicy
	}
	// The step's input is laid over the entry's input (its defaults), and
	// the call's own input over both, below.
	if loc.input != nil && slices.Contains(allowed, "input") {
		out.tookInput = true
		switch base := out.tool["input"].(type) {
		case nil:
			out.tool["input"] = maps.Clone(loc.input.vals)
		case map[string]any:
			merged := maps.Clone(base)
			maps.Copy(merged, loc.input.vals)
			out.tool["input"] = merged
		default:
			ps.atNode(loc.input.key, "write the entry's input as a mapping, or move the step's input keys into the call's input",
				"%s: workbook entry %q's input is not a mapping, so the step's input cannot be merged into it", loc.owner, name)
		}
	}
	for k, e := range f {
		if !slices.Contains(allowed, k) {
			continue
		}
		v := ps.value(e.val)
		ps.checkKeychainRefs(e.val, loc.owner)
		base, bok := out.tool[k].(map[string]any)
		over, ook := v.(map[string]any)
		if k == "input" && loc.input != nil && !ook {
			if v != nil {
				ps.atNode(e.val, "write the call's input as a mapping, or move the step's input keys into it",
					"%s: %s.input is not a mapping, so the step's input cannot be merged into it", loc.owner, loc.field)
			}
			continue // an empty input keeps the step's
		}
		if bok && ook {
			merged := maps.Clone(base)
			maps.Copy(merged, over)
			v = merged
		}
		out.tool[k] = v
	}
	if e, ok := f["assert"]; ok {
		out.assert = ps.assert(e.val, loc.owner)
	}
	if out.policy != nil {
		p := *out.policy
		p.Step, p.Field = loc.step, loc.field+".spec.policy"
		out.policy = &p
	}
	return out
}

func (ps *parser) kindNames() []string {
	return slices.Sorted(maps.Keys(ps.kinds))
}

func (ps *parser) next(n *yaml.Node, step string) *Next {
	const shape = "`next: {spec: {mode: exclusive}, arcs: [{step: <name>, when: <expr>}]}`"
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, "write "+shape, "step %q: next must be a mapping, got %s", step, describe(n))
		return nil
	}
	nx := &Next{Mode: ModeExclusive}
	f := ps.mapping(n, "in next", nextKeys)
	if e, ok := f["spec"]; ok && !isNull(e.val) {
		if deref(e.val).Kind != yaml.MappingNode {
			ps.atNode(e.val, "write "+shape, "step %q: next.spec must be a mapping, got %s", step, describe(e.val))
		} else {
			sf := ps.mapping(e.val, "in next.spec", specKeys)
			if m, ok := sf["mode"]; ok {
				mode, _ := ps.scalar(m.val, "next.spec.mode")
				switch mode {
				case ModeExclusive, ModeInclusive:
					nx.Mode = mode
				case "":
				default:
					ps.atNode(m.val, "use exclusive (first true arc fires) or inclusive (every true arc fires)", "step %q: unknown next mode %q", step, mode)
				}
			}
			if m, ok := sf["on_no_match"]; ok {
				// NoETL: complete (the default) or quiet. Here a step none
				// of whose arcs is true ends its branch either way, and the
				// run completes once no branch is active; see docs/compat.md.
				switch v, _ := ps.scalar(m.val, "next.spec.on_no_match"); v {
				case "complete", "quiet", "":
					nx.OnNoMatch = v
				default:
					ps.atNode(m.val, "use complete or quiet", "step %q: unknown next.spec.on_no_match %q", step, v)
				}
			}
		}
	}
	e, ok := f["arcs"]
	if !ok || isNull(e.val) {
		ps.atNode(n, "add `arcs: [{step: <name>}]` or remove next to end the run here", "step %q: next has no arcs", step)
		return nx
	}
	arcs := deref(e.val)
	if arcs.Kind != yaml.SequenceNode {
		ps.atNode(e.val, "write "+shape, "step %q: next.arcs must be a list, got %s", step, describe(e.val))
		return nx
	}
	if len(arcs.Content) == 0 {
		ps.atNode(e.val, "add an arc or remove next to end the run here", "step %q: next.arcs is empty", step)
	}
	for i, item := range arcs.Content {
		if deref(item).Kind != yaml.MappingNode {
			ps.atNode(item, "each arc is `- step: <name>` with an optional `when:` and `set:`", "step %q: arc must be a mapping, got %s", step, describe(item))
			continue
		}
		af := ps.mapping(item, "in arc", arcKeys)
		a := Arc{Line: item.Line, Col: item.Column}
		if e, ok := af["step"]; ok {
			a.Line, a.Col = e.val.Line, e.val.Column
			a.Step, _ = ps.scalar(e.val, "arc step")
		} else {
			ps.atNode(item, "add `step: <target>` to the arc", "step %q: arc has no target step", step)
		}
		if e, ok := af["when"]; ok {
			a.When, _ = ps.scalar(e.val, "arc when")
		}
		if e, ok := af["cond"]; ok {
			// NoETL's Arc has no cond and ignores it, so there the arc is
			// taken as if unguarded; Millrace does the same, and says so.
			ps.warns = append(ps.warns, Problem{File: ps.file, Line: e.key.Line, Col: e.key.Column, Warning: true,
				Hint: fmt.Sprintf("write `when: \"{{ %s }}\"` if the arc should depend on it", strings.Trim(deref(e.val).Value, "{} ")),
				Msg:  fmt.Sprintf("step %q: arc key cond is not NoETL's and is ignored (NoETL ignores it too): the arc to %q is taken as if it had no when", step, a.Step)})
		}
		if e, ok := af["set"]; ok {
			a.Set = ps.set(e.val, fmt.Sprintf("step %q: next.arcs[%d].set", step, i))
		}
		nx.Arcs = append(nx.Arcs, a)
	}
	return nx
}

// graph reports steps the run can never reach and cycles that can never
// end. A cycle is allowed when at least one of its arcs has a `when` (the
// condition is its exit); so the unguarded cycles are exactly the cycles of
// the graph made of arcs without `when`.
func (ps *parser) graph(pb *Playbook) {
	start := pb.StartStep()
	if start == nil {
		return
	}
	reached := map[string]bool{start.Name: true}
	queue := []*Step{start}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, a := range s.Next.arcsOrNil() {
			if t := pb.ByName[a.Step]; t != nil && !reached[t.Name] {
				reached[t.Name] = true
				queue = append(queue, t)
			}
		}
	}
	// NoETL accepts and runs such a playbook (the step simply never runs),
	// so this is a warning, not a refusal.
	for _, s := range pb.Steps {
		if !reached[s.Name] {
			ps.warns = append(ps.warns, Problem{File: ps.file, Line: s.Line, Col: s.Col, Warning: true,
				Hint: "add an arc to it from another step's next.arcs, or remove it",
				Msg:  fmt.Sprintf("step %q is unreachable from start step %q and never runs", s.Name, start.Name)})
		}
	}

	const (
		unvisited = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(s *Step)
	visit = func(s *Step) {
		state[s.Name] = active
		stack = append(stack, s.Name)
		for _, a := range s.Next.arcsOrNil() {
			t := pb.ByName[a.Step]
			if t == nil || strings.TrimSpace(a.When) != "" {
				continue
			}
			switch state[t.Name] {
			case active:
				i := slices.Index(stack, t.Name)
				path := strings.Join(append(slices.Clone(stack[i:]), t.Name), " -> ")
				ps.at(a.Line, a.Col, "add a `when` to one of its arcs, or iterate with `loop:`",
					"cycle %s can never end", path)
			case unvisited:
				visit(t)
			}
		}
		stack = stack[:len(stack)-1]
		state[s.Name] = done
	}
	for _, s := range pb.Steps {
		if state[s.Name] == unvisited {
			visit(s)
		}
	}
}

func (n *Next) arcsOrNil() []Arc {
	if n == nil {
		return nil
	}
	return n.Arcs
}
