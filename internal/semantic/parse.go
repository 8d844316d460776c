package semantic

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a model definition, at a line and column
// of its source (0 when unknown), rendered "file:line:col: msg (hint: …)"
// like a playbook's problems.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`
	Msg  string `json:"message"`
	Hint string `json:"hint,omitempty"`
}

func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Col > 0 {
			fmt.Fprintf(&b, ":%d", p.Col)
		}
	}
	b.WriteString(": ")
	b.WriteString(p.Msg)
	if p.Hint != "" {
		b.WriteString(" (hint: " + p.Hint + ")")
	}
	return b.String()
}

// Problems is every problem found, in source order: a user fixes a file in
// one round trip.
type Problems []Problem

// Error renders one problem per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// The keys of each mapping, in the order the reference documents them.
var (
	modelKeys   = []string{"name", "description", "table", "sql", "dimensions", "metrics", "pre_aggregates"}
	dimKeys     = []string{"name", "type", "sql", "description"}
	metricKeys  = []string{"name", "type", "sql", "percentile", "description"}
	preAggKeys  = []string{"name", "dimensions", "metrics", "time_dimension", "granularity", "filters", "max_rows", "refresh"}
	filterKeys  = []string{"field", "operator", "values"}
	refreshKeys = []string{"cron", "key_sql", "key_every", "partition_by", "update_window", "max_staleness"}
)

// DefaultKeyEvery is how often refresh.key_sql is polled when key_every
// is not given.
const DefaultKeyEvery = Duration(time.Minute)

// ParseModels reads the models of a project from node, a YAML list of
// models (the value of `models:` under a project of MILLRACE_PROJECTS_FILE),
// and validates them. file names the source in problems. On failure the
// error is Problems and no model is returned.
func ParseModels(file string, node *yaml.Node) (ms []Model, err error) {
	p := &parser{file: file}
	defer func() {
		// A malformed node tree from a caller must become a problem, not
		// take the server down.
		if r := recover(); r != nil {
			ms, err = nil, Problems{{File: file, Msg: fmt.Sprintf("cannot read the models: %v", r)}}
		}
	}()
	ms = p.models(node)
	return p.result(ms)
}

// ParseModelsDoc reads a standalone definition, YAML or JSON, holding
// `{models: [...]}` (the body of POST /api/v2/projects/{project}/models).
func ParseModelsDoc(file string, data []byte) ([]Model, error) {
	p := &parser{file: file}
	doc, ok := p.decode(data)
	if !ok {
		return p.result(nil)
	}
	root := deref(doc)
	if root.Kind != yaml.MappingNode {
		p.at(root, "write `models:` followed by a list of models", "the document must be a mapping with models, got %s", describe(root))
		return p.result(nil)
	}
	f := p.mapping(root, "at the top level", []string{"models"})
	e, ok := f["models"]
	if !ok {
		p.at(root, "write `models:` followed by a list of models", "missing models")
		return p.result(nil)
	}
	return p.result(p.models(e.val))
}

type parser struct {
	file  string
	probs Problems
}

type entry struct{ key, val *yaml.Node }

func (p *parser) result(ms []Model) ([]Model, error) {
	if len(p.probs) == 0 {
		return ms, nil
	}
	sort.SliceStable(p.probs, func(i, j int) bool {
		if p.probs[i].Line != p.probs[j].Line {
			return p.probs[i].Line < p.probs[j].Line
		}
		return p.probs[i].Col < p.probs[j].Col
	})
	// A node checked twice reports once.
	out := p.probs[:1]
	for _, x := range p.probs[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return nil, out
}

func (p *parser) at(n *yaml.Node, hint, format string, args ...any) {
	line, col := 0, 0
	if n != nil {
		line, col = n.Line, n.Column
	}
	p.probs = append(p.probs, Problem{File: p.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

func (p *parser) pos(n *yaml.Node) Pos { return Pos{File: p.file, Line: n.Line, Col: n.Column} }

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

func (p *parser) decode(data []byte) (doc *yaml.Node, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			p.probs = append(p.probs, Problem{File: p.file, Msg: fmt.Sprintf("invalid YAML: %v", r), Hint: "simplify the document; it crashes the YAML parser"})
			doc, ok = nil, false
		}
	}()
	if len(bytes.TrimSpace(data)) == 0 {
		p.probs = append(p.probs, Problem{File: p.file, Line: 1, Col: 1, Msg: "the document is empty", Hint: "write `models:` followed by a list of models"})
		return nil, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	doc = &yaml.Node{}
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.probs = append(p.probs, Problem{File: p.file, Line: 1, Col: 1, Msg: "the document holds no YAML content", Hint: "write `models:` followed by a list of models"})
		} else {
			p.yamlProblem(err)
		}
		return nil, false
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.yamlProblem(err)
		return nil, false
	default:
		p.at(&extra, "put all models under one `models:` list", "the document holds more than one YAML document")
		return nil, false
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			p.probs = append(p.probs, Problem{File: p.file, Line: 1, Col: 1, Msg: "the document holds no YAML content"})
			return nil, false
		}
		doc = doc.Content[0]
	}
	return doc, true
}

func (p *parser) yamlProblem(err error) {
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
		p.probs = append(p.probs, Problem{File: p.file, Line: line, Msg: "invalid YAML: " + msg,
			Hint: "check indentation, quoting and that tabs are not used for indentation"})
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == 0 || n.Kind == yaml.AliasNode || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
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
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return fmt.Sprintf("%q", v)
	}
	return "an unexpected node"
}

// mapping reads a mapping's keys, refusing duplicates and keys not in
// known (with the nearest known key as a hint).
func (p *parser) mapping(n *yaml.Node, where string, known []string) map[string]entry {
	f := map[string]entry{}
	n = deref(n)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			p.at(n.Content[i], "use a plain word as the key", "a key must be a word, got %s", describe(k))
			continue
		}
		if first, dup := f[k.Value]; dup {
			p.at(k, fmt.Sprintf("first given at line %d; remove one", first.key.Line), "duplicate key %q %s", k.Value, where)
			continue
		}
		if !contains(known, k.Value) {
			hint := "allowed keys: " + strings.Join(known, ", ")
			if s := nearest(k.Value, known); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			if k.Value == "pos" {
				hint = "pos is where the server read a definition; remove it"
			}
			p.at(k, hint, "unknown key %q %s", k.Value, where)
			continue
		}
		f[k.Value] = entry{k, v}
	}
	return f
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// str reads a required scalar as text.
func (p *parser) str(e entry, what string) (string, bool) {
	v := deref(e.val)
	if isNull(v) {
		p.at(e.val, "give it a value", "%s is empty", what)
		return "", false
	}
	if v.Kind != yaml.ScalarNode {
		p.at(e.val, "write a single value, quoted if it contains : or {", "%s must be a single value, got %s", what, describe(v))
		return "", false
	}
	return v.Value, true
}

// list reads a sequence (a null is an empty list).
func (p *parser) list(e entry, what string) ([]*yaml.Node, bool) {
	v := deref(e.val)
	if isNull(v) {
		return nil, true
	}
	if v.Kind != yaml.SequenceNode {
		p.at(e.val, "write a list: `- item` lines or [a, b]", "%s must be a list, got %s", what, describe(v))
		return nil, false
	}
	return v.Content, true
}

// name reads a required name.
func (p *parser) name(f map[string]entry, n *yaml.Node, what string) (string, *yaml.Node) {
	e, ok := f["name"]
	if !ok {
		p.at(n, "add `name: ...`", "%s has no name", what)
		return "", n
	}
	s, ok := p.str(e, what+" name")
	if !ok {
		return "", e.val
	}
	if !nameRE.MatchString(s) {
		p.at(e.val, "use lower-case letters, digits and _, starting with a letter or _", "%s name %q is not a valid name", what, s)
	}
	return s, e.val
}

func (p *parser) models(n *yaml.Node) []Model {
	d := deref(n)
	if isNull(d) {
		return nil
	}
	if d.Kind != yaml.SequenceNode {
		p.at(n, "write models as a list: `- name: orders`", "models must be a list, got %s", describe(d))
		return nil
	}
	var ms []Model
	seen := map[string]int{}
	for _, it := range d.Content {
		m, nameNode, ok := p.model(it)
		if !ok {
			continue
		}
		if line, dup := seen[m.Name]; dup {
			p.at(nameNode, fmt.Sprintf("first declared at line %d", line), "duplicate model %q", m.Name)
			continue
		}
		seen[m.Name] = nameNode.Line
		ms = append(ms, m)
	}
	return ms
}

func (p *parser) model(n *yaml.Node) (Model, *yaml.Node, bool) {
	d := deref(n)
	var m Model
	if d == nil || d.Kind != yaml.MappingNode {
		p.at(n, "a model is a mapping with name, table (or sql), dimensions and metrics", "a model must be a mapping, got %s", describe(d))
		return m, n, false
	}
	m.Pos = p.pos(d)
	f := p.mapping(d, "in a model", modelKeys)
	var nameNode *yaml.Node
	m.Name, nameNode = p.name(f, d, "the model")
	where := "model " + m.Name
	if e, ok := f["description"]; ok {
		m.Description, _ = p.str(e, "description")
	}
	te, hasTable := f["table"]
	se, hasSQL := f["sql"]
	switch {
	case hasTable && hasSQL:
		p.at(se.key, "keep one: table names a table, sql is a SELECT", "%s has both table and sql", where)
	case hasTable:
		var ok bool
		m.Table, ok = p.str(te, "table")
		switch {
		case ok && strings.TrimSpace(m.Table) == "":
			p.at(te.val, "name the table, or use sql", "%s has an empty table", where)
		case m.Table != "" && !tableRE.MatchString(m.Table):
			p.at(te.val, `write a table name, optionally schema-qualified (analytics.orders, "My Schema"."Orders"), or use sql`, "table %q is not a table name", m.Table)
		}
	case hasSQL:
		// A quoted "" is a string, not null: refuse it here, or the model
		// would have neither source (a fuzz finding).
		if sql, ok := p.str(se, "sql"); ok && strings.TrimSpace(sql) == "" {
			p.at(se.val, "write the SELECT, or use table", "%s has an empty sql", where)
		} else {
			m.SQL = sql
		}
	default:
		p.at(d, "add `table: schema.table` or `sql: select ...`", "%s has neither table nor sql", where)
	}
	// Field names share one namespace, as do the field ids they make.
	names := map[string]int{}
	ids := map[string]string{}
	claim := func(name string, n *yaml.Node, fieldIDs []string) bool {
		if line, dup := names[name]; dup {
			p.at(n, fmt.Sprintf("first declared at line %d; dimensions and metrics share names", line), "duplicate field %q in %s", name, where)
			return false
		}
		for _, id := range fieldIDs {
			if other, dup := ids[id]; dup {
				p.at(n, "rename one of them", "field %q has the field id %s, which %s already has", name, id, other)
				return false
			}
		}
		names[name] = n.Line
		for _, id := range fieldIDs {
			ids[id] = name
		}
		return true
	}
	written := 0 // fields written, valid or not
	if e, ok := f["dimensions"]; ok {
		items, _ := p.list(e, "dimensions")
		written += len(items)
		for _, it := range items {
			dim, nn, ok := p.dimension(it)
			if !ok {
				continue
			}
			fids := []string{FieldID(m.Name, dim.Name, "")}
			for _, g := range DimGrains(&dim) {
				fids = append(fids, FieldID(m.Name, dim.Name, g))
			}
			if claim(dim.Name, nn, fids) {
				m.Dimensions = append(m.Dimensions, dim)
			}
		}
	}
	if e, ok := f["metrics"]; ok {
		items, _ := p.list(e, "metrics")
		written += len(items)
		for _, it := range items {
			met, nn, ok := p.metric(it)
			if ok && claim(met.Name, nn, []string{FieldID(m.Name, met.Name, "")}) {
				m.Metrics = append(m.Metrics, met)
			}
		}
	}
	if written == 0 {
		p.at(d, "add dimensions: [...] and metrics: [...]", "%s has no dimensions and no metrics", where)
	}
	if e, ok := f["pre_aggregates"]; ok {
		items, _ := p.list(e, "pre_aggregates")
		seen := map[string]int{}
		for _, it := range items {
			pa, nn, ok := p.preAggregate(&m, it)
			if !ok {
				continue
			}
			if line, dup := seen[pa.Name]; dup {
				p.at(nn, fmt.Sprintf("first declared at line %d", line), "duplicate pre-aggregate %q in %s", pa.Name, where)
				continue
			}
			seen[pa.Name] = nn.Line
			m.PreAggregates = append(m.PreAggregates, pa)
		}
	}
	return m, nameNode, m.Name != ""
}

var dimTypes = []string{string(DimString), string(DimNumber), string(DimBoolean), string(DimDate), string(DimTimestamp)}

var metricTypes = []string{string(MetricCount), string(MetricCountDistinct), string(MetricSum), string(MetricMin), string(MetricMax),
	string(MetricAverage), string(MetricMedian), string(MetricPercentile)}

func (p *parser) dimension(n *yaml.Node) (Dimension, *yaml.Node, bool) {
	d := deref(n)
	var dim Dimension
	if d == nil || d.Kind != yaml.MappingNode {
		p.at(n, "e.g. `- {name: status, type: string}`", "a dimension must be a mapping, got %s", describe(d))
		return dim, n, false
	}
	dim.Pos = p.pos(d)
	f := p.mapping(d, "in a dimension", dimKeys)
	var nn *yaml.Node
	dim.Name, nn = p.name(f, d, "the dimension")
	ok := dim.Name != ""
	if e, has := f["type"]; !has {
		p.at(d, "one of "+strings.Join(dimTypes, ", "), "dimension %s has no type", dim.Name)
		ok = false
	} else if s, good := p.str(e, "type"); good {
		dim.Type = DimType(s)
		if !contains(dimTypes, s) {
			p.at(e.val, "one of "+strings.Join(dimTypes, ", "), "unknown dimension type %q", s)
			ok = false
		}
	} else {
		ok = false
	}
	if e, has := f["sql"]; has {
		dim.SQL, _ = p.str(e, "sql")
	}
	if e, has := f["description"]; has {
		dim.Description, _ = p.str(e, "description")
	}
	return dim, nn, ok
}

func (p *parser) metric(n *yaml.Node) (Metric, *yaml.Node, bool) {
	d := deref(n)
	var met Metric
	if d == nil || d.Kind != yaml.MappingNode {
		p.at(n, "e.g. `- {name: revenue, type: sum, sql: amount}`", "a metric must be a mapping, got %s", describe(d))
		return met, n, false
	}
	met.Pos = p.pos(d)
	f := p.mapping(d, "in a metric", metricKeys)
	var nn *yaml.Node
	met.Name, nn = p.name(f, d, "the metric")
	ok := met.Name != ""
	if e, has := f["type"]; !has {
		p.at(d, "one of "+strings.Join(metricTypes, ", "), "metric %s has no type", met.Name)
		ok = false
	} else if s, good := p.str(e, "type"); good {
		met.Type = MetricType(s)
		if !contains(metricTypes, s) {
			hint := "one of " + strings.Join(metricTypes, ", ")
			if s == "count_distinct_approx" || s == "avg" || s == "mean" {
				hint = "Millrace has count_distinct and average"
			}
			p.at(e.val, hint, "unknown metric type %q", s)
			ok = false
		}
	} else {
		ok = false
	}
	if e, has := f["sql"]; has {
		met.SQL, _ = p.str(e, "sql")
	}
	if e, has := f["description"]; has {
		met.Description, _ = p.str(e, "description")
	}
	pe, hasP := f["percentile"]
	switch {
	case hasP && met.Type != MetricPercentile:
		p.at(pe.key, "percentile belongs to `type: percentile` (median is percentile 50)", "metric %s of type %s has a percentile", met.Name, met.Type)
	case hasP:
		v, good := p.number(pe, "percentile")
		if good && (v <= 0 || v >= 100) {
			p.at(pe.val, "e.g. 90 for the 90th percentile; use type median for 50", "percentile %v is outside 0 < p < 100", v)
			good = false
		}
		met.Percentile = v
		ok = ok && good
	case met.Type == MetricPercentile:
		p.at(d, "add `percentile: 90` (0 < p < 100)", "metric %s of type percentile has no percentile", met.Name)
		ok = false
	}
	return met, nn, ok
}

// number reads a numeric scalar.
func (p *parser) number(e entry, what string) (float64, bool) {
	s, ok := p.str(e, what)
	if !ok {
		return 0, false
	}
	v := deref(e.val)
	if tag := v.ShortTag(); tag != "!!int" && tag != "!!float" {
		p.at(e.val, "write a number without quotes", "%s must be a number, got %s", what, describe(v))
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		p.at(e.val, "write a finite decimal number", "%s %q is not a number", what, s)
		return 0, false
	}
	return f, true
}

func (p *parser) preAggregate(m *Model, n *yaml.Node) (PreAggregate, *yaml.Node, bool) {
	d := deref(n)
	var pa PreAggregate
	if d == nil || d.Kind != yaml.MappingNode {
		p.at(n, "e.g. `- {name: daily, dimensions: [status], metrics: [revenue], time_dimension: created_at, granularity: day}`",
			"a pre-aggregate must be a mapping, got %s", describe(d))
		return pa, n, false
	}
	pa.Pos = p.pos(d)
	f := p.mapping(d, "in a pre-aggregate", preAggKeys)
	var nn *yaml.Node
	pa.Name, nn = p.name(f, d, "the pre-aggregate")
	where := "pre-aggregate " + pa.Name
	dimNames := make([]string, len(m.Dimensions))
	for i, x := range m.Dimensions {
		dimNames[i] = x.Name
	}
	metNames := make([]string, len(m.Metrics))
	for i, x := range m.Metrics {
		metNames[i] = x.Name
	}
	written := 0 // list items, valid or not
	refs := func(key, kind string, known []string) []string {
		e, ok := f[key]
		if !ok {
			return nil
		}
		items, _ := p.list(e, key)
		written += len(items)
		var out []string
		for _, it := range items {
			s, ok := p.str(entry{nil, it}, kind)
			if !ok {
				continue
			}
			switch {
			case !contains(known, s):
				hint := kind + "s of " + m.Name + ": " + strings.Join(known, ", ")
				if near := nearest(s, known); near != "" {
					hint = fmt.Sprintf("did you mean %q?", near)
				}
				p.at(it, hint, "%s references %s %q, which model %s does not have", where, kind, s, m.Name)
			case contains(out, s):
				p.at(it, "list it once", "%s lists %s %q twice", where, kind, s)
			default:
				out = append(out, s)
			}
		}
		return out
	}
	pa.Dimensions = refs("dimensions", "dimension", dimNames)
	pa.Metrics = refs("metrics", "metric", metNames)
	var timeDim *Dimension
	te, hasTime := f["time_dimension"]
	if hasTime {
		if s, ok := p.str(te, "time_dimension"); ok {
			pa.TimeDimension = s
			switch timeDim = m.Dimension(s); {
			case timeDim == nil:
				p.at(te.val, "dimensions of "+m.Name+": "+strings.Join(dimNames, ", "), "%s references time dimension %q, which model %s does not have", where, s, m.Name)
			case !timeDim.Type.IsTime():
				p.at(te.val, "the time dimension must be of type date or timestamp", "%s: time dimension %s is a %s", where, s, timeDim.Type)
				timeDim = nil
			case contains(pa.Dimensions, s):
				p.at(te.val, "remove it from dimensions: the time dimension is stored at its granularity", "%s lists %s both as time_dimension and in dimensions", where, s)
			}
		}
	}
	ge, hasGrain := f["granularity"]
	switch {
	case hasGrain && !hasTime:
		p.at(ge.key, "add `time_dimension: <a date or timestamp dimension>`", "%s has a granularity but no time_dimension", where)
	case hasTime && !hasGrain:
		p.at(te.key, "add `granularity: day` (hour, day, week, month, quarter or year)", "%s has a time_dimension but no granularity", where)
	case hasGrain:
		if s, ok := p.str(ge, "granularity"); ok {
			pa.Granularity = Grain(s)
			switch {
			case !pa.Granularity.Valid():
				p.at(ge.val, "one of hour, day, week, month, quarter, year", "unknown granularity %q", s)
			case timeDim != nil && !contains(DimGrains(timeDim), pa.Granularity):
				p.at(ge.val, "a date has no hours: use day or coarser", "%s: granularity %s does not apply to date dimension %s", where, s, timeDim.Name)
			}
		}
	}
	if written == 0 && !hasTime {
		p.at(d, "add dimensions, metrics or a time_dimension", "%s holds no fields", where)
	}
	if e, ok := f["filters"]; ok {
		items, _ := p.list(e, "filters")
		for _, it := range items {
			if fr, ok := p.filter(m, it, where); ok {
				pa.Filters = append(pa.Filters, fr)
			}
		}
	}
	if e, ok := f["max_rows"]; ok {
		if v, good := p.number(e, "max_rows"); good {
			if v < 1 || v != math.Trunc(v) || v > math.MaxInt32*1024.0 {
				p.at(e.val, "a whole number of rows, e.g. 1000000; leave it out for PRE_AGGREGATES_MAX_ROWS", "max_rows %v is not a positive whole number", v)
			} else {
				pa.MaxRows = int(v)
			}
		}
	}
	if e, ok := f["refresh"]; ok {
		pa.Refresh = p.refresh(e, &pa, where)
	}
	return pa, nn, pa.Name != ""
}

func (p *parser) filter(m *Model, n *yaml.Node, where string) (FilterRule, bool) {
	d := deref(n)
	var fr FilterRule
	if d == nil || d.Kind != yaml.MappingNode {
		p.at(n, "e.g. `- {field: status, operator: equals, values: [paid]}`", "a filter must be a mapping, got %s", describe(d))
		return fr, false
	}
	fr.Pos = p.pos(d)
	f := p.mapping(d, "in a filter", filterKeys)
	fe, ok := f["field"]
	if !ok {
		p.at(d, "add `field: <dimension>`", "a filter of %s has no field", where)
		return fr, false
	}
	name, ok := p.str(fe, "field")
	if !ok {
		return fr, false
	}
	field, found := newFieldIndex(m, nil).lookup(name)
	if !found || field.Dim == nil || field.Grain != "" {
		names := make([]string, len(m.Dimensions))
		for i, x := range m.Dimensions {
			names[i] = x.Name
		}
		p.at(fe.val, "dimensions of "+m.Name+": "+strings.Join(names, ", "), "a filter of %s references %q, which is not a dimension of model %s", where, name, m.Name)
		return fr, false
	}
	fr.Target.FieldID = field.ID
	oe, ok := f["operator"]
	if !ok {
		p.at(d, "add `operator: equals` (or notEquals, isNull, notNull, greaterThan, ...)", "a filter of %s has no operator", where)
		return fr, false
	}
	op, ok := p.str(oe, "operator")
	if !ok {
		return fr, false
	}
	fr.Operator = FilterOperator(op)
	if ve, has := f["values"]; has {
		v := deref(ve.val)
		var items []*yaml.Node
		switch {
		case isNull(v):
		case v.Kind == yaml.SequenceNode:
			items = v.Content
		case v.Kind == yaml.ScalarNode:
			items = []*yaml.Node{v}
		default:
			p.at(ve.val, "write a list of values", "values must be a list, got %s", describe(v))
			return fr, false
		}
		for _, it := range items {
			x, ok := p.value(it)
			if !ok {
				return fr, false
			}
			fr.Values = append(fr.Values, x)
		}
	}
	if _, err := checkValues(field, fr.Operator, fr.Values); err != nil {
		at := oe.val
		if ve, has := f["values"]; has && isOperator(fr.Operator) {
			at = ve.val
		}
		p.at(at, "", "a filter of %s on %s: %v", where, field.Dim.Name, err)
		return fr, false
	}
	return fr, true
}

// value reads a filter value as written: text, a number or a boolean
// (dates stay text; Resolve and ScopeCond type them by the field).
func (p *parser) value(n *yaml.Node) (any, bool) {
	v := deref(n)
	if isNull(v) || v.Kind != yaml.ScalarNode {
		p.at(n, "write a single value: text, a number, true/false or a date", "a filter value must be a single value, got %s", describe(v))
		return nil, false
	}
	switch v.ShortTag() {
	case "!!int", "!!float":
		f, err := strconv.ParseFloat(strings.ReplaceAll(v.Value, "_", ""), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			p.at(n, "write a finite decimal number", "filter value %q is not a number", v.Value)
			return nil, false
		}
		return f, true
	case "!!bool":
		var b bool
		if err := v.Decode(&b); err != nil {
			p.at(n, "write true or false", "filter value %q is not a boolean", v.Value)
			return nil, false
		}
		return b, true
	}
	return v.Value, true
}

func (p *parser) refresh(e entry, pa *PreAggregate, where string) Refresh {
	var r Refresh
	d := deref(e.val)
	if isNull(d) {
		return r
	}
	if d.Kind != yaml.MappingNode {
		p.at(e.val, "e.g. `refresh: {cron: \"0 * * * *\"}`", "refresh must be a mapping, got %s", describe(d))
		return r
	}
	f := p.mapping(d, "in refresh", refreshKeys)
	if ce, ok := f["cron"]; ok {
		if s, ok := p.str(ce, "refresh.cron"); ok {
			if err := checkCron(s); err != nil {
				p.at(ce.val, `five fields in UTC: minute hour day-of-month month day-of-week, e.g. "0 * * * *" hourly, or @daily`, "refresh.cron %q: %v", s, err)
			} else {
				r.Cron = s
			}
		}
	}
	if ke, ok := f["key_sql"]; ok {
		r.KeySQL, _ = p.str(ke, "refresh.key_sql")
	}
	dur := func(key string) (Duration, *yaml.Node) {
		de, ok := f[key]
		if !ok {
			return 0, nil
		}
		s, ok := p.str(de, "refresh."+key)
		if !ok {
			return 0, de.key
		}
		v, err := ParseDuration(s)
		if err != nil {
			p.at(de.val, `e.g. "90s", "15m", "6h" or "3d"`, "refresh.%s: %v", key, err)
		}
		return v, de.key
	}
	var keyEveryAt, windowAt *yaml.Node
	r.KeyEvery, keyEveryAt = dur("key_every")
	r.UpdateWindow, windowAt = dur("update_window")
	r.MaxStaleness, _ = dur("max_staleness")
	switch {
	case keyEveryAt != nil && r.KeySQL == "":
		p.at(keyEveryAt, "add key_sql, or remove key_every", "%s: refresh.key_every without key_sql", where)
	case r.KeySQL != "" && r.KeyEvery == 0 && keyEveryAt == nil:
		r.KeyEvery = DefaultKeyEvery
	}
	pe, hasPart := f["partition_by"]
	if hasPart {
		if s, ok := p.str(pe, "refresh.partition_by"); ok {
			r.PartitionBy = Grain(s)
			switch {
			case r.PartitionBy != GrainDay && r.PartitionBy != GrainMonth:
				p.at(pe.val, "day or month", "refresh.partition_by %q is not day or month", s)
			case pa.TimeDimension == "":
				p.at(pe.val, "partitions split the time dimension: add time_dimension and granularity", "%s: partition_by needs a time_dimension", where)
			case pa.Granularity.Valid() && !pa.Granularity.Derives(r.PartitionBy):
				p.at(pe.val, "partition by a grain the granularity rolls up into (granularity day: day or month; month: month)",
					"%s: partition_by %s cannot be derived from granularity %s", where, s, pa.Granularity)
			}
		}
	}
	if windowAt != nil && !hasPart {
		p.at(windowAt, "add partition_by: day|month, or remove update_window", "%s: refresh.update_window without partition_by", where)
	}
	return r
}

// checkCron parses a standard five-field spec (or a descriptor such as
// @daily) in UTC; a schedule that never fires is refused.
func checkCron(s string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("not a cron schedule (%v)", r)
		}
	}()
	if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
		return errors.New("a time zone prefix is not supported: schedules are in UTC")
	}
	sched, err := cron.ParseStandard(s)
	if err != nil {
		return err
	}
	if sched.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return errors.New("the schedule never fires")
	}
	return nil
}

// ParseDuration reads "90s", "15m", "6h", "1h30m" (Go durations) or whole
// days "3d"; the duration must be positive.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > 36500 {
			return 0, fmt.Errorf("%q is not a whole number of days", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration", s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration", s)
	}
	return Duration(d), nil
}
