package engine

import (
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unsafe"

	"github.com/nikolalohinski/gonja/v2"
	controlStructures "github.com/nikolalohinski/gonja/v2/builtins/control_structures"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/nodes"
	"github.com/nikolalohinski/gonja/v2/tokens"
)

// How the budgets reach inside gonja, which has no context or limits of
// its own:
//   - every {% for %} body and every macro body starts with a budget check
//     node (instrument), so a 10000x10000 loop stops at its deadline, its
//     request's end or a shutdown instead of spinning for minutes;
//   - output goes through limitedWriter;
//   - the operators that build strings or lists (+, *, ~) are rewritten
//     into calls of sized operators that refuse a result past the budget
//     before allocating it, and range(), lipsum() and the amplifying
//     filters check their sizes first.
//
// The run reaches these through a context name no template can spell.
const budgetKey = "\x00budget"

// Hidden names of the sized operators.
const (
	opAdd = "\x00add"
	opMul = "\x00mul"
	opCat = "\x00cat"
	opOut = "\x00out"
)

func runOf(ctx *exec.Context) *run {
	if v, ok := ctx.Get(budgetKey); ok {
		if r, ok := v.(*run); ok {
			return r
		}
	}
	return nil
}

// budgetCheck is the node instrument puts first in loop and macro bodies.
// enter/exit count macro nesting (exit is the body's last node: a body
// that failed half way ends the whole rendering anyway).
type budgetCheck struct {
	loc         *tokens.Token
	enter, exit bool
	// data is the literal text of the body, counted as output on every
	// iteration: a body may write to a set block's or a macro's buffer,
	// which limitedWriter does not see.
	data int
}

func (b *budgetCheck) Position() *tokens.Token { return b.loc }
func (b *budgetCheck) String() string          { return "budget" }

// Execute implements exec.ControlStructure.
func (b *budgetCheck) Execute(r *exec.Renderer, _ *nodes.ControlStructureBlock) error {
	rn := runOf(r.Environment.Context)
	if rn == nil {
		return nil
	}
	switch {
	case b.exit:
		rn.depth--
		return nil
	case b.enter:
		rn.depth++
		if rn.depth > maxMacroDepth {
			if rn.err == nil {
				rn.err = &BudgetError{Limit: maxMacroDepth, What: "nested macro calls"}
			}
			return rn.err
		}
	}
	if err := rn.produced(b.data); err != nil {
		return err
	}
	return rn.check()
}

func checkNode(loc *tokens.Token, w *nodes.Wrapper, enter, exit bool) nodes.Node {
	data := 0
	for _, n := range w.Nodes {
		if d, ok := n.(*nodes.Data); ok && d.Data != nil {
			data += len(d.Data.Val)
		}
	}
	return &nodes.ControlStructureBlock{Location: loc, Name: "budget", ControlStructure: &budgetCheck{loc: loc, enter: enter, exit: exit, data: data}}
}

// counted is {{ expr }}'s value, its string counted as output (see data).
func counted(e *exec.Evaluator, va *exec.VarArgs) *exec.Value {
	if len(va.Args) != 1 {
		return exec.AsValue(exec.ErrInvalidCall(nil))
	}
	v := va.Args[0]
	if rn := runOf(e.Environment.Context); rn != nil && v.IsString() {
		if err := rn.produced(v.Len()); err != nil {
			return exec.AsValue(err)
		}
	}
	return v
}

// countedCall wraps expr in counted, unless it is already.
func countedCall(expr nodes.Expression) nodes.Expression {
	if expr == nil {
		return nil
	}
	if c, ok := expr.(*nodes.Call); ok {
		if n, ok := c.Func.(*nodes.Name); ok && n.Name.Val == opOut {
			return expr
		}
	}
	loc := expr.Position()
	fn := &nodes.Name{Name: &tokens.Token{Type: tokens.Name, Val: opOut}}
	if loc != nil {
		fn.Name.Pos, fn.Name.Line, fn.Name.Col = loc.Pos, loc.Line, loc.Col
	}
	return &nodes.Call{Location: loc, Func: fn, Args: []nodes.Expression{expr}, Kwargs: map[string]nodes.Expression{}}
}

// instrument rewrites a freshly parsed template in place (before it is
// cached and shared): checks in loop and macro bodies, sized operators.
// It walks the exported fields of the tree by reflection, so it also
// reaches loops nested in if, with, filter, call and block bodies.
func instrument(root *nodes.Template) {
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Interface:
			if v.IsNil() {
				return
			}
			walk(v.Elem())
			if be, ok := v.Interface().(*nodes.BinaryExpression); ok && v.CanSet() {
				if c := sizedCall(be); c != nil {
					v.Set(reflect.ValueOf(c))
				}
			}
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			switch t := v.Interface().(type) {
			case *tokens.Token:
				return
			case *controlStructures.ForControlStructure:
				if w := t.BodyWrapper; w != nil {
					w.Nodes = append([]nodes.Node{checkNode(t.Position(), w, false, false)}, w.Nodes...)
				}
			case *nodes.Macro:
				if w := t.Wrapper; w != nil {
					w.Nodes = append(append([]nodes.Node{checkNode(t.Location, w, true, false)}, w.Nodes...), checkNode(t.Location, w, false, true))
				}
			case *nodes.Output:
				walk(v.Elem())
				t.Expression = countedCall(t.Expression)
				t.Alternative = countedCall(t.Alternative)
				return
			}
			walk(v.Elem())
		case reflect.Struct:
			// gonja keeps some control structures' parts (set's expression,
			// if's branches) in unexported fields; they are rewritten the
			// same way, through their addresses, before the template is
			// shared. This is the price of not forking gonja.
			for i := 0; i < v.NumField(); i++ {
				f := v.Field(i)
				if !v.Type().Field(i).IsExported() {
					if !f.CanAddr() {
						continue
					}
					f = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
				}
				walk(f)
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		case reflect.Map:
			it := v.MapRange()
			for it.Next() {
				e := it.Value()
				walk(e)
				if be, ok := e.Interface().(*nodes.BinaryExpression); ok && e.Kind() == reflect.Interface {
					if c := sizedCall(be); c != nil {
						v.SetMapIndex(it.Key(), reflect.ValueOf(c))
					}
				}
			}
		}
	}
	walk(reflect.ValueOf(root))
}

// sizedCall is the call of a sized operator standing for be, or nil when
// be's operator builds nothing large.
func sizedCall(be *nodes.BinaryExpression) *nodes.Call {
	var name string
	switch be.Operator.Token.Type {
	case tokens.Addition:
		name = opAdd
	case tokens.Multiply:
		name = opMul
	case tokens.Tilde:
		name = opCat
	default:
		return nil
	}
	loc := be.Operator.Token
	fn := &nodes.Name{Name: &tokens.Token{Type: tokens.Name, Val: name, Pos: loc.Pos, Line: loc.Line, Col: loc.Col}}
	return &nodes.Call{Location: loc, Func: fn, Args: []nodes.Expression{be.Left, be.Right}, Kwargs: map[string]nodes.Expression{}}
}

// sizedOp returns the sized operator for op: it checks the size the
// result would have, then lets gonja's own evaluator compute it, so the
// semantics stay gonja's.
func sizedOp(op tokens.Type, sym string) func(*exec.Evaluator, *exec.VarArgs) *exec.Value {
	expr := &nodes.BinaryExpression{
		Left:     &nodes.Name{Name: &tokens.Token{Type: tokens.Name, Val: "\x00l"}},
		Right:    &nodes.Name{Name: &tokens.Token{Type: tokens.Name, Val: "\x00r"}},
		Operator: &nodes.BinOperator{Token: &tokens.Token{Type: op, Val: sym}},
	}
	return func(e *exec.Evaluator, va *exec.VarArgs) *exec.Value {
		if len(va.Args) != 2 {
			return exec.AsValue(exec.ErrInvalidCall(nil))
		}
		l, r := va.Args[0], va.Args[1]
		if rn := runOf(e.Environment.Context); rn != nil {
			if err := rn.sized(op, l, r); err != nil {
				return exec.AsValue(err)
			}
		}
		env := *e.Environment
		env.Context = e.Environment.Context.Inherit()
		env.Context.Set("\x00l", l)
		env.Context.Set("\x00r", r)
		sub := &exec.Evaluator{Config: e.Config, Environment: &env, Loader: e.Loader}
		return sub.Eval(expr)
	}
}

// sized checks the result of l op r against the budgets before it is built.
func (r *run) sized(op tokens.Type, a, b *exec.Value) error {
	if err := r.check(); err != nil {
		return err
	}
	switch op {
	case tokens.Addition:
		switch {
		case a.IsList() && b.IsList():
			return r.items(a.Len()+b.Len(), "a list built by a template")
		case a.IsFloat() || b.IsFloat():
		case a.IsString() || b.IsString():
			return r.bytes(len(a.String()) + len(b.String()))
		}
	case tokens.Multiply:
		if a.IsFloat() || b.IsFloat() || !a.IsString() {
			return nil
		}
		n, size := b.Integer(), len(a.String())
		if n > 0 && size > 0 && n > r.limits.MaxBytes/size+1 {
			return r.bytes(-1)
		}
		return r.bytes(n * size)
	case tokens.Tilde:
		return r.bytes(len(a.String()) + len(b.String()))
	}
	return nil
}

// rangeFunc is range() returning a list, refused past MaxItems. gonja's
// own materializes every item through a goroutine that leaks when a
// rendering stops early.
func rangeFunc(e *exec.Evaluator, params *exec.VarArgs) *exec.Value {
	start, stop, step := 0, 0, 1
	ints := func() bool {
		for _, a := range params.Args {
			if !a.IsInteger() {
				return false
			}
		}
		return true
	}()
	switch n := len(params.Args); {
	case !ints || n == 0 || n > 3:
		return exec.AsValue(exec.ErrInvalidCall(errRangeSignature))
	case n == 1:
		stop = params.Args[0].Integer()
	case n == 2:
		start, stop = params.Args[0].Integer(), params.Args[1].Integer()
	default:
		start, stop, step = params.Args[0].Integer(), params.Args[1].Integer(), params.Args[2].Integer()
	}
	if step == 0 {
		return exec.AsValue(exec.ErrInvalidCall(errRangeStep))
	}
	count := 0
	if step > 0 && stop > start {
		count = (stop - start + step - 1) / step
	} else if step < 0 && stop < start {
		count = (start - stop - step - 1) / -step
	}
	if rn := runOf(e.Environment.Context); rn != nil {
		if err := rn.items(count, "range() of "+strconv.Itoa(count)+" items"); err != nil {
			return exec.AsValue(err)
		}
	}
	out := make([]any, count)
	for i := range out {
		out[i] = start + i*step
	}
	return exec.AsValue(out)
}

type constError string

func (e constError) Error() string { return string(e) }

const (
	errRangeSignature = constError("expected signature is [start, ]stop[, step] where all arguments are integers")
	errRangeStep      = constError("step cannot be 0")
)

// lipsumFunc is lipsum() refused past MaxBytes (n paragraphs of up to max
// words of up to ~12 bytes).
func lipsumFunc(orig any) func(*exec.Evaluator, *exec.VarArgs) *exec.Value {
	fn, _ := orig.(func(*exec.Evaluator, *exec.VarArgs) *exec.Value)
	return func(e *exec.Evaluator, params *exec.VarArgs) *exec.Value {
		n, max := 5, 100
		if v, ok := params.KwArgs["n"]; ok && v.IsInteger() {
			n = v.Integer()
		}
		if v, ok := params.KwArgs["max"]; ok && v.IsInteger() {
			max = v.Integer()
		}
		if rn := runOf(e.Environment.Context); rn != nil {
			if n > rn.limits.MaxBytes || max > rn.limits.MaxBytes || (n > 0 && max > 0 && n*max > rn.limits.MaxBytes/12) {
				return exec.AsValue(rn.bytes(-1))
			}
		}
		if fn == nil {
			return exec.AsValue("")
		}
		return fn(e, params)
	}
}

var formatWidthRE = regexp.MustCompile(`\d+`)

// sizedFilter wraps a filter: before it runs, sizes its amplifying
// arguments (a width, a separator times the items, a replacement times
// its matches); after, refuses a string result past MaxBytes.
func sizedFilter(name string, fn exec.FilterFunction) exec.FilterFunction {
	return func(e *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
		rn := runOf(e.Environment.Context)
		if rn == nil || in.IsError() {
			return fn(e, in, params)
		}
		if err := rn.check(); err != nil {
			return exec.AsValue(err)
		}
		if err := rn.filterSize(name, in, params); err != nil {
			return exec.AsValue(err)
		}
		out := fn(e, in, params)
		if out != nil && !out.IsError() && out.IsString() {
			if err := rn.bytes(out.Len()); err != nil {
				return exec.AsValue(err)
			}
		}
		return out
	}
}

func (r *run) filterSize(name string, in *exec.Value, params *exec.VarArgs) error {
	args := append([]*exec.Value(nil), params.Args...)
	for _, v := range params.KwArgs {
		args = append(args, v)
	}
	for _, a := range args {
		if a.IsInteger() && a.Integer() > r.limits.MaxBytes {
			return r.bytes(-1)
		}
	}
	switch name {
	case "format":
		for _, w := range formatWidthRE.FindAllString(in.String(), -1) {
			if n, err := strconv.Atoi(w); err != nil || n > r.limits.MaxBytes {
				return r.bytes(-1)
			}
		}
	case "indent":
		width := 4
		for _, a := range args {
			if a.IsInteger() {
				width = a.Integer()
			} else if a.IsString() {
				width = a.Len()
			}
		}
		if in.IsString() {
			lines := strings.Count(in.String(), "\n") + 1
			if width > 0 && lines > r.limits.MaxBytes/width {
				return r.bytes(-1)
			}
		}
	case "replace":
		if len(params.Args) >= 2 && in.IsString() {
			old, repl := params.Args[0].String(), params.Args[1].String()
			matches := len(in.String()) + 1
			if old != "" {
				matches = strings.Count(in.String(), old)
			}
			if len(repl) > 0 && matches > (r.limits.MaxBytes-in.Len())/len(repl)+1 {
				return r.bytes(-1)
			}
		}
	case "join":
		if len(args) > 0 && (in.IsList() || in.IsDict()) {
			if sep := args[0].String(); len(sep) > 0 && in.Len() > r.limits.MaxBytes/len(sep)+1 {
				return r.bytes(-1)
			}
		}
	}
	return nil
}

// installBudgets adds the sized operators, range and lipsum to ctx, and
// wraps every filter of filters.
func installBudgets(ctx *exec.Context, filters *exec.FilterSet) {
	ctx.Set(opAdd, sizedOp(tokens.Addition, "+"))
	ctx.Set(opMul, sizedOp(tokens.Multiply, "*"))
	ctx.Set(opCat, sizedOp(tokens.Tilde, "~"))
	ctx.Set(opOut, counted)
	ctx.Set("range", rangeFunc)
	orig, _ := gonja.DefaultContext.Get("lipsum")
	ctx.Set("lipsum", lipsumFunc(orig))
	for _, name := range filterNames {
		if fn, ok := filters.Get(name); ok {
			_ = filters.Replace(name, sizedFilter(name, fn))
		}
	}
}

// filterNames are the filters wrapped by sizedFilter: gonja's, and ours.
var filterNames = []string{
	"abs", "attr", "batch", "capitalize", "center", "default", "d", "dictsort", "e", "escape",
	"filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int",
	"join", "items", "last", "length", "count", "list", "lower", "map", "max", "min", "pprint",
	"random", "rejectattr", "reject", "replace", "reverse", "round", "safe", "selectattr",
	"select", "slice", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
	"truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
	"b64encode", "b64decode",
}
