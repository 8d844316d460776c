package playbook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Keys allowed at each level of the document.
var (
	topKeys      = []string{"apiVersion", "kind", "metadata", "workload", "workflow"}
	metadataKeys = []string{"name", "path", "description", "tags"}
	stepKeys     = []string{"step", "desc", "tool", "next"}
	nextKeys     = []string{"spec", "arcs"}
	specKeys     = []string{"mode"}
	arcKeys      = []string{"step", "when"}
)

// notYetKeys are NoETL keys this version rejects explicitly: running a
// playbook while ignoring its loop or retry would silently change its meaning.
var notYetKeys = map[string]bool{
	"loop": true, "set": true, "retry": true, "keychain": true, "executor": true,
	"ctx": true, "iter": true, "case": true, "vars": true, "sink": true, "workbook": true,
	"spec": true, // step and tool level; next.spec is supported
}

// reservedStepNames are template variables of every execution; a step with
// such a name could not be referred to by its result.
var reservedStepNames = map[string]bool{"workload": true, "execution_id": true}

// notYetKeyNames is notYetKeys sorted, for deterministic suggestions.
var notYetKeyNames = slices.Sorted(maps.Keys(notYetKeys))

// maxSuggestDistance bounds the edit distance for "did you mean" hints; two
// edits catch typos and transpositions without suggesting unrelated keys.
const maxSuggestDistance = 2

// Parse parses and validates a playbook. On failure the error is Problems
// listing everything wrong, in line order; the Playbook is then nil.
func Parse(filename string, data []byte, kinds KindSet) (*Playbook, error) {
	ps := &parser{file: filename, kinds: kinds}
	pb := ps.parse(data)
	if len(ps.probs) > 0 {
		ps.probs.sort()
		// A node can be checked both structurally and as a value; say it once.
		return nil, slices.Compact(ps.probs)
	}
	return pb, nil
}

type parser struct {
	file  string
	kinds KindSet
	probs Problems
}

func (ps *parser) at(line, col int, hint, format string, args ...any) {
	ps.probs = append(ps.probs, Problem{File: ps.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

func (ps *parser) atNode(n *yaml.Node, hint, format string, args ...any) {
	ps.at(n.Line, n.Column, hint, format, args...)
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// yamlProblem turns a yaml.v3 error into a Problem at the line it reports.
func (ps *parser) yamlProblem(err error) {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for _, msg := range msgs {
		line := 0
		msg = strings.TrimPrefix(msg, "yaml: ")
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = msg[len(m[0]):]
		}
		ps.at(line, 0, "check indentation, quoting and that tabs are not used for indentation", "invalid YAML: %s", msg)
	}
}

func (ps *parser) parse(data []byte) *Playbook {
	if len(bytes.TrimSpace(data)) == 0 {
		ps.at(1, 1, "a playbook starts with apiVersion: noetl.io/v2, kind: Playbook, metadata and workflow", "file is empty")
		return nil
	}
	doc, ok := ps.decode(data)
	if !ok {
		return nil
	}
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			ps.at(1, 1, "a playbook starts with apiVersion: noetl.io/v2, kind: Playbook, metadata and workflow", "file holds no YAML content (only comments)")
			return nil
		}
		root = root.Content[0]
	}
	root = deref(root)
	if root.Kind != yaml.MappingNode {
		ps.atNode(root, "a playbook is a YAML mapping with apiVersion, kind, metadata and workflow at the top level",
			"file is not a playbook: top level is %s, not a mapping", describe(root))
		return nil
	}

	pb := &Playbook{Source: string(data), Workload: map[string]any{}, ByName: map[string]*Step{}}
	top := ps.mapping(root, "at top level", topKeys)

	if e, ok := top["apiVersion"]; ok {
		pb.APIVersion, _ = ps.scalar(e.val, "apiVersion")
		if pb.APIVersion != "" && pb.APIVersion != APIVersionNoETL && pb.APIVersion != APIVersionMillrace {
			ps.atNode(e.val, "use "+APIVersionNoETL+" or "+APIVersionMillrace, "unsupported apiVersion %q", pb.APIVersion)
		}
	} else {
		ps.atNode(root, "add `apiVersion: "+APIVersionNoETL+"` at the top", "missing apiVersion")
	}
	if e, ok := top["kind"]; ok {
		pb.Kind, _ = ps.scalar(e.val, "kind")
		if pb.Kind != "" && pb.Kind != KindPlaybook {
			ps.atNode(e.val, "use `kind: Playbook`", "unsupported kind %q", pb.Kind)
		}
	} else {
		ps.atNode(root, "add `kind: Playbook` at the top", "missing kind")
	}
	if e, ok := top["metadata"]; ok {
		pb.Metadata = ps.metadata(e.val)
	} else {
		ps.atNode(root, "add metadata with name and path", "missing metadata")
	}
	if e, ok := top["workload"]; ok && !isNull(e.val) {
		if deref(e.val).Kind != yaml.MappingNode {
			ps.atNode(e.val, "workload holds named inputs, e.g. `workload: {message: hi}`", "workload must be a mapping, got %s", describe(e.val))
		} else if v, ok := ps.value(e.val).(map[string]any); ok {
			pb.Workload = v
		}
	}
	if e, ok := top["workflow"]; ok {
		ps.workflow(e.val, pb)
	} else {
		ps.atNode(root, "add `workflow:` with a list of steps", "missing workflow")
	}
	ps.graph(pb)
	return pb
}

// decode reads exactly one YAML document.
func (ps *parser) decode(data []byte) (doc *yaml.Node, ok bool) {
	// yaml.v3 is mature but a fuzz-found panic must still become a Problem,
	// not crash the API server that is validating an upload.
	defer func() {
		if r := recover(); r != nil {
			ps.at(0, 0, "simplify the YAML; this input crashes the YAML parser", "invalid YAML: %v", r)
			doc, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	doc = &yaml.Node{}
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			ps.at(1, 1, "a playbook starts with apiVersion: noetl.io/v2, kind: Playbook, metadata and workflow", "file holds no YAML content")
		} else {
			ps.yamlProblem(err)
		}
		return nil, false
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		ps.yamlProblem(err)
		return nil, false
	default:
		ps.atNode(&extra, "put each playbook in its own file", "file holds more than one YAML document")
		return nil, false
	}
	return doc, true
}

func (ps *parser) metadata(n *yaml.Node) Metadata {
	var md Metadata
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, "e.g. `metadata: {name: hello, path: examples/hello}`", "metadata must be a mapping, got %s", describe(n))
		return md
	}
	f := ps.mapping(n, "in metadata", metadataKeys)
	if e, ok := f["name"]; ok {
		md.Name, _ = ps.scalar(e.val, "metadata.name")
	} else {
		ps.atNode(n, "add `name:` to metadata", "metadata.name is required")
	}
	if e, ok := f["path"]; ok {
		md.Path, _ = ps.scalar(e.val, "metadata.path")
		switch {
		case md.Path == "": // already reported by scalar
		case !pathRE.MatchString(md.Path):
			ps.atNode(e.val, "use letters, digits and _ . / - only", "metadata.path %q has invalid characters", md.Path)
		case strings.HasPrefix(md.Path, "/"):
			ps.atNode(e.val, "paths are relative to the catalog root; drop the leading /", "metadata.path %q must not start with /", md.Path)
		case strings.Contains(md.Path, ".."):
			ps.atNode(e.val, "paths are relative to the catalog root and cannot climb out of it", "metadata.path %q must not contain ..", md.Path)
		}
	} else {
		ps.atNode(n, "add `path:` to metadata, e.g. `path: examples/hello`", "metadata.path is required")
	}
	if e, ok := f["description"]; ok {
		md.Description, _ = ps.scalar(e.val, "metadata.description")
	}
	if e, ok := f["tags"]; ok && !isNull(e.val) {
		tags := deref(e.val)
		if tags.Kind != yaml.SequenceNode {
			ps.atNode(e.val, "e.g. `tags: [etl, daily]`", "metadata.tags must be a list, got %s", describe(e.val))
		} else {
			for _, t := range tags.Content {
				if s, ok := ps.scalar(t, "metadata.tags item"); ok {
					md.Tags = append(md.Tags, s)
				}
			}
		}
	}
	return md
}

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
		if s.Next == nil {
			continue
		}
		for _, a := range s.Next.Arcs {
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
	f := ps.mapping(item, "in step", stepKeys)
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
	if reservedStepNames[name] {
		ps.atNode(e.val, "templates use {{ "+name+" }} for the execution itself; rename the step", "step name %q is reserved", name)
		return nil
	}
	s.Name = name
	if e, ok := f["desc"]; ok {
		s.Desc, _ = ps.scalar(e.val, "desc")
	}
	if e, ok := f["tool"]; ok {
		s.Tool = ps.tool(e.val, name)
	} else {
		ps.at(s.Line, s.Col, "add `tool: {kind: ...}` to the step", "step %q has no tool", name)
	}
	if e, ok := f["next"]; ok && !isNull(e.val) {
		s.Next = ps.next(e.val, name)
	}
	return s
}

func (ps *parser) tool(n *yaml.Node, step string) map[string]any {
	switch deref(n).Kind {
	case yaml.MappingNode:
	case yaml.SequenceNode:
		ps.atNode(n, "tool pipelines (a list of tasks) are part of NoETL but not supported yet in this version; use one tool per step",
			"step %q: tool must be a mapping, got a list", step)
		return nil
	default:
		ps.atNode(n, "e.g. `tool: {kind: http, url: ...}`", "step %q: tool must be a mapping, got %s", step, describe(n))
		return nil
	}
	f := ps.mapping(n, "", nil)
	e, ok := f["kind"]
	if !ok {
		ps.atNode(n, "add `kind: <"+strings.Join(ps.kindNames(), "|")+">` to the tool", "step %q: tool has no kind", step)
		return nil
	}
	kind, ok := ps.scalar(e.val, "tool.kind")
	if !ok {
		return nil
	}
	allowed, known := ps.kinds[kind]
	if !known {
		hint := "known kinds: " + strings.Join(ps.kindNames(), ", ")
		if s := nearest(kind, ps.kindNames()); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		ps.atNode(e.val, hint, "step %q: unknown tool kind %q", step, kind)
		return nil
	}
	ps.checkKeys(f, "in "+kind+" tool", append([]string{"kind"}, allowed...))
	v, _ := ps.value(n).(map[string]any)
	return v
}

func (ps *parser) kindNames() []string {
	names := make([]string, 0, len(ps.kinds))
	for k := range ps.kinds {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
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
		} else if m, ok := ps.mapping(e.val, "in next.spec", specKeys)["mode"]; ok {
			mode, _ := ps.scalar(m.val, "next.spec.mode")
			switch mode {
			case ModeExclusive, ModeInclusive:
				nx.Mode = mode
			case "":
			default:
				ps.atNode(m.val, "use exclusive (first true arc fires) or inclusive (every true arc fires)", "step %q: unknown next mode %q", step, mode)
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
	for _, item := range arcs.Content {
		if deref(item).Kind != yaml.MappingNode {
			ps.atNode(item, "each arc is `- step: <name>` with an optional `when:`", "step %q: arc must be a mapping, got %s", step, describe(item))
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
		nx.Arcs = append(nx.Arcs, a)
	}
	return nx
}

// graph reports steps the run can never reach and cycles, which this
// version cannot execute (iteration arrives with `loop:`).
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
		for _, t := range targets(pb, s) {
			if !reached[t.Name] {
				reached[t.Name] = true
				queue = append(queue, t)
			}
		}
	}
	for _, s := range pb.Steps {
		if !reached[s.Name] {
			ps.at(s.Line, s.Col, "add an arc to it from another step's next.arcs, or remove it",
				"step %q is unreachable from start step %q", s.Name, start.Name)
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
			if t == nil {
				continue
			}
			switch state[t.Name] {
			case active:
				i := slices.Index(stack, t.Name)
				path := append(slices.Clone(stack[i:]), t.Name)
				ps.at(a.Line, a.Col, "loops arrive with `loop:`; a workflow must not return to an earlier step",
					"cycle: %s", strings.Join(path, " -> "))
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

func targets(pb *Playbook, s *Step) []*Step {
	var out []*Step
	for _, a := range s.Next.arcsOrNil() {
		if t := pb.ByName[a.Step]; t != nil {
			out = append(out, t)
		}
	}
	return out
}

// entry is one key/value pair of a YAML mapping.
type entry struct{ key, val *yaml.Node }

// mapping collects the pairs of a mapping node, resolving YAML merge keys
// (explicit keys win over merged ones) and reporting duplicate, non-scalar
// and, when known is non-nil, unknown keys.
func (ps *parser) mapping(n *yaml.Node, where string, known []string) map[string]entry {
	f := map[string]entry{}
	var merged []entry
	n = deref(n)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			ps.atNode(k, "use a plain word as the key", "mapping key must be a scalar, got %s", describe(k))
			continue
		}
		if k.Tag == "!!merge" {
			merged = append(merged, mergeSources(v)...)
			continue
		}
		if first, dup := f[k.Value]; dup {
			ps.atNode(k, fmt.Sprintf("first defined at line %d; remove one", first.key.Line), "duplicate key %q", k.Value)
			continue
		}
		f[k.Value] = entry{k, v}
	}
	for _, src := range merged {
		for i := 0; i+1 < len(src.val.Content); i += 2 {
			k := src.val.Content[i]
			if _, ok := f[k.Value]; !ok && k.Kind == yaml.ScalarNode {
				f[k.Value] = entry{k, src.val.Content[i+1]}
			}
		}
	}
	if known != nil {
		ps.checkKeys(f, where, known)
	}
	return f
}

// mergeSources returns the mappings a `<<:` value refers to.
func mergeSources(v *yaml.Node) []entry {
	v = deref(v)
	switch v.Kind {
	case yaml.MappingNode:
		return []entry{{nil, v}}
	case yaml.SequenceNode:
		var out []entry
		for _, c := range v.Content {
			if c = deref(c); c.Kind == yaml.MappingNode {
				out = append(out, entry{nil, c})
			}
		}
		return out
	}
	return nil
}

func (ps *parser) checkKeys(f map[string]entry, where string, known []string) {
	for key, e := range f {
		if slices.Contains(known, key) {
			continue
		}
		var hint string
		switch {
		case notYetKeys[key]:
			hint = fmt.Sprintf("`%s` is part of NoETL but not supported yet in this version", key)
		case nearest(key, known) != "":
			hint = fmt.Sprintf("did you mean %q?", nearest(key, known))
		case nearest(key, notYetKeyNames) != "":
			k := nearest(key, notYetKeyNames)
			hint = fmt.Sprintf("did you mean %q? `%s` is part of NoETL but not supported yet in this version", k, k)
		default:
			hint = "allowed keys here: " + strings.Join(known, ", ")
		}
		ps.atNode(e.key, hint, "unknown key %q %s", key, where)
	}
}

// scalar returns a scalar's text. A null or empty value is reported as
// missing; a mapping or list is reported as the wrong type.
func (ps *parser) scalar(n *yaml.Node, what string) (string, bool) {
	d := deref(n)
	if isNull(d) {
		ps.atNode(n, "give it a value", "%s is empty", what)
		return "", false
	}
	if d.Kind != yaml.ScalarNode {
		ps.atNode(n, "write a single value, quoted if it contains : or {", "%s must be a scalar, got %s", what, describe(d))
		return "", false
	}
	return d.Value, true
}

// value converts a node into plain Go values that encode to JSON: string
// keys, timestamps kept as written, and no Inf/NaN.
func (ps *parser) value(n *yaml.Node) any {
	if !ps.prepare(n, map[*yaml.Node]bool{}) {
		return nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		ps.atNode(n, "simplify this value", "cannot decode value: %v", err)
		return nil
	}
	return stringKeys(v)
}

// prepare walks a value subtree once (aliases are not followed, their
// anchors are walked where defined) so that timestamps decode as strings
// and non-JSON numbers are reported at their line.
func (ps *parser) prepare(n *yaml.Node, seen map[*yaml.Node]bool) bool {
	if seen[n] {
		return true
	}
	seen[n] = true
	ok := true
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!timestamp", "!!binary":
			n.Tag = "!!str"
		case "!!float":
			var f float64
			if n.Decode(&f) == nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
				ps.atNode(n, "quote it if you mean the string", "number %s cannot be represented in JSON", n.Value)
				ok = false
			}
		}
	case yaml.MappingNode, yaml.SequenceNode, yaml.DocumentNode:
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 && c.Kind != yaml.ScalarNode && c.Kind != yaml.AliasNode {
				ps.atNode(c, "use a plain word as the key", "mapping key must be a scalar, got %s", describe(c))
				ok = false
				continue
			}
			ok = ps.prepare(c, seen) && ok
		}
	case yaml.AliasNode:
		if n.Alias != nil && !seen[n.Alias] {
			ok = ps.prepare(n.Alias, seen)
		}
	}
	return ok
}

// stringKeys converts yaml.v3's map[any]any (produced when a mapping has a
// non-string key such as 1: x) into map[string]any, recursively.
func stringKeys(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = stringKeys(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = stringKeys(e)
		}
		return t
	}
	return v
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func describe(n *yaml.Node) string {
	n = deref(n)
	switch {
	case isNull(n):
		return "an empty value"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return fmt.Sprintf("the scalar %q", truncate(n.Value, 40))
	}
	return "an unexpected node"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func suggestName(name string, steps []*Step) string {
	names := make([]string, len(steps))
	for i, s := range steps {
		names[i] = s.Name
	}
	if s := nearest(name, names); s != "" {
		return fmt.Sprintf("did you mean %q?", s)
	}
	return "known steps: " + strings.Join(names, ", ")
}

// nearest returns the candidate closest to s within maxSuggestDistance
// edits, the earliest on ties, or "" if none is close.
func nearest(s string, candidates []string) string {
	best, bestD := "", maxSuggestDistance+1
	for _, c := range candidates {
		if d := levenshtein(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
