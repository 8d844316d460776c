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

	"go.yaml.in/yaml/v3"
)

// Keys allowed at each level of the document.
var (
	topKeys        = []string{"apiVersion", "kind", "metadata", "workload", "keychain", "workbook", "workflow", "executor"}
	metadataKeys   = []string{"name", "path", "description", "tags", "labels", "version", "exposes_as_mcp"}
	stepKeys       = []string{"step", "desc", "tool", "input", "loop", "set", "next", "timeout", "output", "pool"}
	nextKeys       = []string{"spec", "arcs"}
	specKeys       = []string{"mode", "on_no_match"}
	arcKeys        = []string{"step", "when", "set", "cond"}
	keychainKeys   = []string{"name", "credential", "kind", "scope"}
	workbookKeys   = []string{"name", "desc", "tool", "assert"}
	loopKeys       = []string{"in", "iterator", "spec", "cursor"}
	loopSpecKeys   = []string{"mode", "max_in_flight", "policy", "frame"}
	loopPolicyKeys = []string{"exec", "results"}
	toolSpecKeys   = []string{"policy"}
	policyKeys     = []string{"rules"}
	ruleKeys       = []string{"when", "else", "then"}
	elseKeys       = []string{"then"}
	thenKeys       = []string{"do", "to", "attempts", "backoff", "delay", "set"}
	assertKeys     = []string{"expects", "returns"}
	// toolExtraKeys are accepted in every tool besides kind and the kind's own.
	toolExtraKeys = []string{"spec", "assert", "output"}
)

const (
	hintAdmit = "to run the step only under a condition, put a `when` on the arcs that lead to it"
)

// unsupported maps NoETL keys Millrace does not implement, by where they
// appear ("" = anywhere), to what to write instead. They are refused as
// "unsupported" rather than "unknown" so the user learns the alternative.
var unsupported = map[string]map[string]string{
	"at top level": {
		"vars": "put inputs in `workload` and computed values in a step's `set`",
	},
	"in step": {
		"when": "put the condition on the arcs that lead to this step: `arcs: [{step: <this>, when: ...}]`",
		"case": "route with next.arcs, one arc per branch with its own `when`",
		"args": "move the values into the step's or the tool's `input`",
		"data": "move the values into the step's or the tool's `input`",
		// NoETL refuses it too: a step's work is its tool.
		"command": "a step runs its tool: write `tool: {kind: shell, cmds: [...]}` or `tool: {kind: postgres, command: ...}`",
	},
	"in arc": {
		"args": "assign values with the arc's `set`",
		"data": "assign values with the arc's `set`",
	},
	"in policy": {"admit": hintAdmit},
	// NoETL loads a script from a file, GCS, S3 or HTTP when the step runs.
	"in postgres tool": {"script": "put the SQL inline in `command:`; Millrace runs no external script files"},
	"in duckdb tool":   {"script": "put the SQL inline in `query:`; Millrace runs no external script files"},
	// NoETL's python iterator runs the code once per item inside one command.
	"in python tool": {"script": "put the code inline in `code:`; Millrace runs no external script files",
		"iterator": "move it to the step: python's `iterator: {items: X, item: name}` is the step's `loop: {in: X, iterator: name}`, one command per item"},
	"": {
		"retry":  "write `tool: {kind: ..., spec: {policy: {rules: [{when: ..., then: {do: retry, attempts: 3}}]}}}`",
		"sink":   "store results with a postgres or duckdb task in the step's tool list",
		"save":   "store results with a postgres or duckdb task in the step's tool list",
		"vars":   "assign values with `set`",
		"ctx":    "assign context values with `set: {ctx.name: value}`",
		"iter":   "loop variables are bound by `loop:`; read them as iter.<iterator>",
		"policy": "put it under spec: `spec: {policy: {rules: [...]}}`",
	},
}

// reservedNames are template variables of every execution (or of a loop,
// policy or arc); a step, task or iterator with such a name could not be
// read.
var reservedNames = map[string]bool{
	"workload": true, "execution_id": true, "ctx": true, "keychain": true,
	"loop": true, "iter": true, "output": true, "event": true,
}

// maxSuggestDistance bounds the edit distance for "did you mean" hints; two
// edits catch typos and transpositions without suggesting unrelated keys.
const maxSuggestDistance = 2

// Parse parses and validates a playbook. On failure the error is Problems
// listing everything wrong, in line order; the Playbook is then nil.
func Parse(filename string, data []byte, kinds KindSet) (*Playbook, error) {
	pb, errs, _ := Check(filename, data, kinds)
	if len(errs) > 0 {
		return nil, errs
	}
	return pb, nil
}

// Check is Parse that also returns the warnings when the playbook is
// refused, so `validate` can show everything at once. The Playbook is nil
// when errs is not empty; otherwise it carries the warnings too.
func Check(filename string, data []byte, kinds KindSet) (pb *Playbook, errs, warns Problems) {
	ps := &parser{file: filename, kinds: kinds}
	pb = ps.parse(data)
	ps.warns.sort()
	if len(ps.probs) > 0 {
		ps.probs.sort()
		// A node can be checked both structurally and as a value; say it once.
		return nil, slices.Compact(ps.probs), ps.warns
	}
	pb.Warnings = ps.warns
	return pb, nil, ps.warns
}

type parser struct {
	file      string
	kinds     KindSet
	probs     Problems
	warns     Problems                 // Warning problems; they do not fail Parse
	keychain  map[string]bool          // declared keychain entry names
	workbook  map[string]*workbookItem // by name
	entry     string                   // executor.spec.entry_step, "" when absent
	entryNode *yaml.Node               // where entry was written
	// inTasks is true while a task list's tasks are parsed: only there do
	// iter.* set targets and `do: jump` mean something.
	inTasks bool
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
	if e, ok := top["keychain"]; ok && !isNull(e.val) {
		pb.Keychain = ps.keychainList(e.val)
	}
	if e, ok := top["workbook"]; ok && !isNull(e.val) {
		ps.workbookList(e.val)
	}
	if e, ok := top["executor"]; ok && !isNull(e.val) {
		ps.executor(e.val)
	}
	if e, ok := top["workflow"]; ok {
		ps.workflow(e.val, pb)
	} else {
		ps.atNode(root, "add `workflow:` with a list of steps", "missing workflow")
	}
	ps.resolveEntry(pb)
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
		// NoETL writes catalog paths with or without a leading /; the
		// catalog is relative to its root, so "/a/b" is "a/b".
		md.Path = strings.TrimLeft(md.Path, "/")
		switch {
		case md.Path == "": // already reported by scalar
		case !pathRE.MatchString(md.Path):
			ps.atNode(e.val, "use letters, digits and _ . / - only", "metadata.path %q has invalid characters", md.Path)
		case strings.Contains(md.Path, ".."):
			ps.atNode(e.val, "paths are relative to the catalog root and cannot climb out of it", "metadata.path %q must not contain ..", md.Path)
		}
	} else {
		ps.atNode(n, "add `path:` to metadata, e.g. `path: examples/hello`", "metadata.path is required")
	}
	if e, ok := f["description"]; ok {
		md.Description, _ = ps.scalar(e.val, "metadata.description")
	}
	if e, ok := f["version"]; ok {
		md.Version, _ = ps.scalar(e.val, "metadata.version")
	}
	if e, ok := f["exposes_as_mcp"]; ok {
		// NoETL's flag for listing the playbook as an MCP tool; Millrace
		// has no MCP face, so it is checked and kept without effect.
		if d := deref(e.val); d.Kind != yaml.ScalarNode || d.ShortTag() != "!!bool" {
			ps.atNode(e.val, "write true or false", "metadata.exposes_as_mcp must be true or false, got %s", describe(e.val))
		}
	}
	if e, ok := f["labels"]; ok && !isNull(e.val) {
		md.Labels = ps.labels(e.val)
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

// labels parses metadata.labels: a mapping of names to single values.
// Values keep their text as written (`version: 10` is "10").
func (ps *parser) labels(n *yaml.Node) map[string]string {
	const shape = "e.g. `labels: {category: example, team: data}`"
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, shape, "metadata.labels must be a mapping of names to values, got %s", describe(n))
		return nil
	}
	f := ps.mapping(n, "", nil)
	out := make(map[string]string, len(f))
	for _, k := range sortedKeys(f) {
		if v, ok := ps.scalar(f[k].val, "metadata.labels."+k); ok {
			out[k] = v
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
	ps.checkToolKeys(f, where, "", known)
}

// checkToolKeys is checkKeys for the keys of a tool of kind ("" outside a
// tool), whose hints may name NoETL's aliases (hints.go).
func (ps *parser) checkToolKeys(f map[string]entry, where, kind string, known []string) {
	for _, key := range sortedKeys(f) {
		if slices.Contains(known, key) {
			continue
		}
		e := f[key]
		if hint := unsupportedHint(where, key); hint != "" {
			ps.atNode(e.key, hint, "unsupported NoETL key %q %s: Millrace does not implement it", key, where)
			continue
		}
		hint := "allowed keys here: " + strings.Join(known, ", ")
		if h := keyHint(kind, key, known); h != "" {
			hint = h
		} else if s := nearest(key, known); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		ps.atNode(e.key, hint, "unknown key %q %s", key, where)
	}
}

func unsupportedHint(where, key string) string {
	if h := unsupported[where][key]; h != "" {
		return h
	}
	return unsupported[""][key]
}

// sortedKeys returns a mapping's keys in source order, so problems come out
// deterministically.
func sortedKeys(f map[string]entry) []string {
	keys := slices.Collect(maps.Keys(f))
	slices.SortFunc(keys, func(a, b string) int {
		ka, kb := f[a].key, f[b].key
		if ka.Line != kb.Line {
			return ka.Line - kb.Line
		}
		return ka.Column - kb.Column
	})
	return keys
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
