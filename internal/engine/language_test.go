package engine

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/playbook"
)

var langKinds = playbook.KindSet{
	"noop":     {"result"},
	"http":     {"method", "url", "headers", "body"},
	"postgres": {"auth", "command"},
}

const langPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: lang, path: tests/lang}
workload:
  users: [{name: ann}, {name: bob}, {name: cy}]
keychain:
  - {name: api, credential: api_cred}
workflow:
  - step: start
    tool:
      kind: http
      url: "https://x/{{ execution_id }}"
      headers:
        Authorization: "Bearer {{ keychain.api.token }}"
        X-User: "{{ users[0].name }}"
      spec:
        policy:
          rules:
            - when: "{{ output.http.status in [502, 503] }}"
              then: {do: retry, attempts: 3, backoff: exponential, delay: 2}
            - when: "{{ output.status == 'error' and output.error.retryable }}"
              then: {do: retry, attempts: 2, set: {ctx.last_error: "{{ output.error.message }}"}}
            - when: "{{ output.data.skip }}"
              then: {do: continue, set: {ctx.skipped: "{{ output.attempt }}"}}
            - when: "{{ output.status == 'error' }}"
              then: {do: fail}
            - else:
                then: {do: continue}
    set:
      total: "{{ result.count }}"
    next:
      spec: {mode: MODE}
      arcs:
        - step: each
          when: "{{ event.name == 'call.done' and start.count > 1 }}"
          set: {ctx.picked: "{{ start.data.count }}"}
        - step: tasks
  - step: each
    loop:
      in: "{{ users }}"
      iterator: user
      spec: {mode: parallel, max_in_flight: 2}
    tool: {kind: noop, result: "{{ user.name }}-{{ loop.index }}"}
    next:
      arcs:
        - step: done
          when: "{{ event.name == 'loop.done' and each | length == 3 }}"
  - step: tasks
    tool:
      - name: one
        kind: noop
        set: {first: "{{ output.data.v }}"}
      - name: two
        kind: postgres
        auth: pg
        command: "select {{ one.v }}"
  - step: done
    tool: {kind: noop}
`

type langBundle struct {
	pb    *playbook.Playbook
	scope Scope
}

func setupLang(t *testing.T, mode string) *langBundle {
	t.Helper()
	pb, err := playbook.Parse("lang.yaml", []byte(strings.Replace(langPlaybook, "MODE", mode, 1)), langKinds)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return &langBundle{pb: pb, scope: Scope{ExecutionID: 9, Workload: pb.Workload, Results: map[string]any{}}}
}

func TestRenderToolKeychainAndTasks(t *testing.T) {
	t.Parallel()
	b := setupLang(t, "exclusive")

	tool, err := RenderTool(b.pb.ByName["start"], b.scope)
	if err != nil {
		t.Fatal(err)
	}
	h := tool["headers"].(map[string]any)
	if h["Authorization"] != "Bearer {{ keychain.api.token }}" || h["X-User"] != "ann" || tool["url"] != "https://x/9" {
		t.Errorf("tool = %#v, want keychain template verbatim and the rest rendered", tool)
	}
	if tool, err := RenderTool(b.pb.ByName["tasks"], b.scope); tool != nil || err != nil {
		t.Errorf("task-list step: RenderTool = %#v, %v; want nil, nil", tool, err)
	}

	// The worker renders the rest with the secrets.
	out, err := RenderAtWorker(tool, b.scope, map[string]any{"api": map[string]any{"token": "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	if h := out.(map[string]any)["headers"].(map[string]any); h["Authorization"] != "Bearer s3cret" {
		t.Errorf("worker headers = %#v", h)
	}
	_, err = RenderAtWorker(map[string]any{"command": "{{ keychain.db.password }}"}, b.scope, nil)
	var te *TemplateError
	if !errors.As(err, &te) || te.Field != "command" || !strings.Contains(te.Reason, "attribute 'db' not found") {
		t.Errorf("missing credential: err = %v", err)
	}

	// A task renders with the results of earlier tasks bound.
	tasks := b.pb.ByName["tasks"].Tasks
	out, err = RenderAtWorker(tasks[1].Tool, b.scope.With("one", map[string]any{"v": 7}), nil)
	if err != nil || out.(map[string]any)["command"] != "select 7" {
		t.Errorf("task two = %#v, %v", out, err)
	}
	set, err := TaskSet(b.pb.ByName["tasks"], &tasks[0], b.scope, Outcome{Status: StatusCompleted, Result: map[string]any{"v": 7.0}, Attempt: 1})
	if err != nil || !reflect.DeepEqual(set, map[string]any{"first": 7}) {
		t.Errorf("TaskSet = %#v, %v", set, err)
	}
}

func TestLoop(t *testing.T) {
	t.Parallel()
	b := setupLang(t, "exclusive")
	each := b.pb.ByName["each"]

	items, err := LoopItems(each, b.scope)
	if err != nil || len(items) != 3 {
		t.Fatalf("LoopItems = %#v, %v", items, err)
	}
	var got []any
	for i := range items {
		s := IterationScope(b.scope, each, items, i)
		tool, err := RenderTool(each, s)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tool["result"])
	}
	if want := []any{"ann-1", "bob-2", "cy-3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("iterations = %#v, want %#v", got, want)
	}
	s := IterationScope(b.scope, each, items, 2)
	for tmpl, want := range map[string]any{
		"{{ loop.index0 }}": 2, "{{ loop.first }}": false, "{{ loop.last }}": true, "{{ loop.length }}": 3,
		"{{ iter.user.name }}": "cy", "{{ iter.index }}": 2,
		"{{ loop_index }}": 2, // NoETL's name (loop_test.yaml)
	} {
		if v, err := Render(tmpl, s); err != nil || v != want {
			t.Errorf("%s = %#v, %v; want %#v", tmpl, v, err, want)
		}
	}
	if b.scope.Extra != nil {
		t.Error("IterationScope modified the caller's scope")
	}

	for in, reason := range map[string]string{
		"{{ users[0] }}":       "must render to a list, got a mapping",
		"{{ nobody }}":         `variable "nobody" is undefined`,
		"{{ users | length }}": "must render to a list, got the number 3",
	} {
		bad := *each
		bad.Loop = &playbook.Loop{In: in, Iterator: "user"}
		_, err := LoopItems(&bad, b.scope)
		var te *TemplateError
		if !errors.As(err, &te) || te.Step != "each" || te.Field != "loop.in" || !strings.Contains(te.Reason, reason) {
			t.Errorf("LoopItems(%s) err = %v, want %q", in, err, reason)
		}
	}
}

func TestResultsReadAsData(t *testing.T) {
	t.Parallel()

	s := Scope{
		Results: map[string]any{
			"fetch": map[string]any{"count": 2.0, "items": []any{"a"}},
			"own":   map[string]any{"status": "ok", "data": map[string]any{"message": "hi"}},
			"each":  []any{map[string]any{"n": 1.0}, map[string]any{"n": 2.0}},
		},
		Context: map[string]any{"picked": "x", "clash": "context wins"},
		Extra:   map[string]any{"user": "extra wins", "picked": "extra wins"},
	}
	s.Results["user"] = "result"
	s.Results["clash"] = "result"
	for tmpl, want := range map[string]any{
		"{{ fetch.count }}":                             2,
		"{{ fetch.data.count }}":                        2,
		"{{ fetch['data'].items[0] }}":                  "a",
		"{{ own.data.message }}":                        "hi",
		"{{ own.status }}":                              "ok",
		"{{ each | length }}":                           2,
		"{{ each.data | length }}":                      2,
		"{% for r in each %}{{ r.n }}{% endfor %}":      "12",
		"{% for r in each.data %}{{ r.n }}{% endfor %}": "12",
		"{{ each[1].n }}":                               2,
		"{{ each.data }}":                               []any{map[string]any{"n": 1}, map[string]any{"n": 2}},
		"{{ ctx.picked }}":                              "x",
		"{{ clash }}":                                   "context wins",
		"{{ picked }}":                                  "extra wins",
		"{{ user }}":                                    "extra wins",
		"{{ fetch | tojson }}":                          `{"count":2,"items":["a"]}`,
	} {
		v, err := Render(tmpl, s)
		if err != nil || !reflect.DeepEqual(v, want) {
			t.Errorf("%s = %#v, %v; want %#v", tmpl, v, err, want)
		}
	}
	// Natively a result is a plain mapping: no injected data key.
	s.Context = nil
	v, err := Render("{{ fetch }}", s)
	if want := map[string]any{"count": 2, "items": []any{"a"}}; err != nil || !reflect.DeepEqual(v, want) {
		t.Errorf("{{ fetch }} = %#v, %v", v, err)
	}
	if _, err := Render("{{ fetch.nope }}", s); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing attribute err = %v", err)
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	b := setupLang(t, "exclusive")
	p := b.pb.ByName["start"].Policy

	fail := func(status float64, msg string, retryable bool, attempt int) Outcome {
		return Outcome{Status: StatusFailed, Result: map[string]any{"status": status}, Error: msg, Retryable: retryable, Attempt: attempt}
	}
	tests := []struct {
		name string
		p    *playbook.Policy
		o    Outcome
		want Decision
	}{
		{"no policy completed", nil, Outcome{Status: StatusCompleted, Attempt: 1}, Decision{Do: "continue"}},
		{"no policy failed", nil, Outcome{Status: StatusFailed, Error: "boom", Attempt: 1}, Decision{Do: "fail", Reason: "boom"}},
		{"http 503 first retry", p, fail(503, "503 Service Unavailable", true, 1),
			Decision{Do: "retry", Delay: 2 * time.Second, Reason: "attempt 1 of 3: 503 Service Unavailable; retrying in 2s"}},
		{"http 503 exponential", p, fail(503, "503", true, 2), Decision{Do: "retry", Delay: 4 * time.Second, Reason: "attempt 2 of 3: 503; retrying in 4s"}},
		{"http 503 gives up", p, fail(503, "503 Service Unavailable", true, 3),
			Decision{Do: "fail", Reason: "gave up after 3 attempts: 503 Service Unavailable"}},
		{"retryable error sets context", p, Outcome{Status: StatusFailed, Error: "reset", Retryable: true, Attempt: 1},
			Decision{Do: "retry", Delay: time.Second, Set: map[string]any{"ctx.last_error": "reset"}, Reason: "attempt 1 of 2: reset; retrying in 1s"}},
		{"non-retryable error fails", p, fail(400, "400 Bad Request", false, 1), Decision{Do: "fail", Reason: "400 Bad Request"}},
		{"continue on data", p, Outcome{Status: StatusCompleted, Result: map[string]any{"skip": true}, Attempt: 2},
			Decision{Do: "continue", Set: map[string]any{"ctx.skipped": 2}}},
		{"else", p, Outcome{Status: StatusCompleted, Result: "fine", Attempt: 1}, Decision{Do: "continue"}},
		{"no match failed", &playbook.Policy{Rules: []playbook.Rule{{When: "{{ false }}", Do: "continue"}}}, Outcome{Status: StatusFailed, Error: "x", Attempt: 1},
			Decision{Do: "fail", Reason: "x"}},
		{"continue past a failure", &playbook.Policy{Rules: []playbook.Rule{{Else: true, Do: "continue"}}}, Outcome{Status: StatusFailed, Error: "x", Attempt: 1},
			Decision{Do: "continue", Reason: "policy continues past the error: x"}},
		{"delay capped", &playbook.Policy{Rules: []playbook.Rule{{Else: true, Do: "retry", Attempts: 50, Backoff: "exponential", Delay: time.Minute}}},
			Outcome{Status: StatusFailed, Error: "x", Attempt: 30}, Decision{Do: "retry", Delay: MaxRetryDelay, Reason: "attempt 30 of 50: x; retrying in 10m0s"}},
		{"linear backoff", &playbook.Policy{Rules: []playbook.Rule{{Else: true, Do: "retry", Attempts: 5, Backoff: "linear", Delay: 2 * time.Second}}},
			Outcome{Status: StatusFailed, Error: "x", Attempt: 3}, Decision{Do: "retry", Delay: 6 * time.Second, Reason: "attempt 3 of 5: x; retrying in 6s"}},
		{"linear capped", &playbook.Policy{Rules: []playbook.Rule{{Else: true, Do: "retry", Attempts: 50, Backoff: "linear", Delay: time.Minute}}},
			Outcome{Status: StatusFailed, Error: "x", Attempt: 30}, Decision{Do: "retry", Delay: MaxRetryDelay, Reason: "attempt 30 of 50: x; retrying in 10m0s"}},
		{"no backoff", &playbook.Policy{Rules: []playbook.Rule{{Else: true, Do: "retry", Attempts: 5, Backoff: "none", Delay: 2 * time.Second}}},
			Outcome{Status: StatusFailed, Error: "x", Attempt: 2}, Decision{Do: "retry", Reason: "attempt 2 of 5: x; retrying in 0s"}},
		{"default attempts", &playbook.Policy{Rules: []playbook.Rule{{Else: true, Do: "retry"}}},
			Outcome{Status: StatusFailed, Error: "x", Attempt: 3}, Decision{Do: "fail", Reason: "gave up after 3 attempts: x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decide(tt.p, b.scope, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decide = %+v\nwant %+v", got, tt.want)
			}
		})
	}

	bad := &playbook.Policy{Step: "start", Field: "tool.spec.policy", Rules: []playbook.Rule{{When: "{{ output.status == }}", Do: "fail"}}}
	_, err := Decide(bad, b.scope, Outcome{Status: StatusFailed, Attempt: 1})
	var te *TemplateError
	if !errors.As(err, &te) || te.Step != "start" || te.Field != "tool.spec.policy.rules[0].when" || !strings.Contains(te.Reason, "syntax error") {
		t.Errorf("bad when err = %v", err)
	}
	bad = &playbook.Policy{Step: "start", Field: "tool.spec.policy", Rules: []playbook.Rule{{Else: true, Do: "continue", Set: map[string]any{"x": "{{ nope }}"}}}}
	if _, err := Decide(bad, b.scope, Outcome{Status: StatusCompleted, Attempt: 1}); !errors.As(err, &te) || te.Field != "tool.spec.policy.rules[0].then.set.x" {
		t.Errorf("bad set err = %v", err)
	}
}

func TestNextSteps(t *testing.T) {
	t.Parallel()

	for mode, want := range map[string][]Fired{
		"exclusive": {{Step: "each", Set: map[string]any{"ctx.picked": 2}}},
		"inclusive": {{Step: "each", Set: map[string]any{"ctx.picked": 2}}, {Step: "tasks"}},
	} {
		b := setupLang(t, mode)
		b.scope.Results["start"] = map[string]any{"count": 2.0}
		got, err := NextSteps(b.pb, b.pb.ByName["start"], b.scope)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: NextSteps = %+v, %v; want %+v", mode, got, err, want)
		}
	}

	b := setupLang(t, "exclusive")
	b.scope.Results["start"] = map[string]any{"count": 1.0}
	if got, _ := NextSteps(b.pb, b.pb.ByName["start"], b.scope); !reflect.DeepEqual(got, []Fired{{Step: "tasks"}}) {
		t.Errorf("count 1: fired %+v, want tasks", got)
	}
	// A loop's arcs see event.name loop.done and the list result.
	b.scope.Results["each"] = []any{"a", "b", "c"}
	if got, err := NextSteps(b.pb, b.pb.ByName["each"], b.scope); err != nil || !reflect.DeepEqual(got, []Fired{{Step: "done"}}) {
		t.Errorf("loop arcs: fired %+v, %v", got, err)
	}
	if got, _ := NextSteps(b.pb, b.pb.ByName["done"], b.scope); got != nil {
		t.Errorf("terminal step fired %+v", got)
	}

	start := *b.pb.ByName["start"]
	start.Next = &playbook.Next{Arcs: []playbook.Arc{{Step: "done", Set: map[string]any{"v": "{{ nope }}"}}}}
	_, err := NextSteps(b.pb, &start, b.scope)
	var te *TemplateError
	if !errors.As(err, &te) || te.Step != "start" || te.Field != "next.arcs[0].set.v" || !strings.Contains(te.Reason, `"nope" is undefined`) {
		t.Errorf("arc set err = %v", err)
	}
	start.Next = &playbook.Next{Arcs: []playbook.Arc{{Step: "done"}, {Step: "done", When: "{{ ( }}"}}, Mode: playbook.ModeInclusive}
	if _, err := NextSteps(b.pb, &start, b.scope); !errors.As(err, &te) || te.Field != "next.arcs[1].when" {
		t.Errorf("arc when err = %v", err)
	}
}

func TestStepSetAndContext(t *testing.T) {
	t.Parallel()
	b := setupLang(t, "exclusive")
	start := b.pb.ByName["start"]

	set, err := StepSet(start, b.scope, map[string]any{"count": 4.0})
	if err != nil || !reflect.DeepEqual(set, map[string]any{"total": 4}) {
		t.Fatalf("StepSet = %#v, %v", set, err)
	}
	if _, err := StepSet(start, b.scope, "not a map"); err == nil || !strings.Contains(err.Error(), `step "start" field set.total`) {
		t.Errorf("StepSet err = %v", err)
	}
	if set, err := StepSet(b.pb.ByName["done"], b.scope, 1); set != nil || err != nil {
		t.Errorf("no set: %#v, %v", set, err)
	}

	orig := map[string]any{"keep": 1, "nested": map[string]any{"a": 1}}
	ctx := MergeContext(orig, map[string]any{"total": 4, "ctx.fetched": true, "ctx.nested.b": 2, "x.y": 3})
	want := map[string]any{"keep": 1, "total": 4, "fetched": true, "nested": map[string]any{"a": 1, "b": 2}, "x": map[string]any{"y": 3}}
	if !reflect.DeepEqual(ctx, want) {
		t.Errorf("MergeContext = %#v\nwant %#v", ctx, want)
	}
	if len(orig) != 2 || len(orig["nested"].(map[string]any)) != 1 {
		t.Errorf("MergeContext modified its input: %#v", orig)
	}
	if got := MergeContext(nil, map[string]any{"a": 1}); !reflect.DeepEqual(got, map[string]any{"a": 1}) {
		t.Errorf("MergeContext(nil) = %#v", got)
	}
	s := b.scope
	s.Context = ctx
	if v, err := Render("{{ total }}/{{ ctx.nested.b }}/{{ fetched }}", s); err != nil || v != "4/2/True" && v != "4/2/true" {
		t.Errorf("context render = %#v, %v", v, err)
	}
}

func TestAssert(t *testing.T) {
	t.Parallel()

	a := &playbook.Assert{Expects: []string{"x"}, Returns: []string{"score"}}
	if err := CheckExpects(a, map[string]any{"input": map[string]any{"x": 1}}); err != nil {
		t.Error(err)
	}
	if err := CheckExpects(a, map[string]any{"input": map[string]any{"x": nil}}); err == nil || !strings.Contains(err.Error(), `input "x" is missing or null`) {
		t.Errorf("expects err = %v", err)
	}
	if err := CheckReturns(a, map[string]any{"score": 1}); err != nil {
		t.Error(err)
	}
	if err := CheckReturns(a, map[string]any{}); err == nil || !strings.Contains(err.Error(), `no "score"`) {
		t.Errorf("returns err = %v", err)
	}
	if err := CheckReturns(a, "x"); err == nil {
		t.Error("non-mapping result accepted")
	}
	if CheckExpects(nil, nil) != nil || CheckReturns(nil, nil) != nil {
		t.Error("nil assert failed")
	}
}

// NoETL lets a parallel loop's max_in_flight be a template, rendered when
// the loop starts.
func TestLoopMaxInFlightTemplate(t *testing.T) {
	t.Parallel()
	b := setupLang(t, "exclusive")
	each := *b.pb.ByName["each"]
	for expr, want := range map[string]int{"{{ users | length }}": 3, "{{ '2' }}": 2, "{{ 4 }}": 4} {
		each.Loop = &playbook.Loop{In: "{{ users }}", Mode: playbook.LoopParallel, MaxInFlightExpr: expr}
		if n, err := LoopMaxInFlight(&each, b.scope); err != nil || n != want {
			t.Errorf("%s = %d, %v; want %d", expr, n, err, want)
		}
	}
	for _, expr := range []string{"{{ 0 }}", "{{ 'many' }}", "{{ users }}", "{{ 1.5 }}"} {
		each.Loop = &playbook.Loop{In: "{{ users }}", Mode: playbook.LoopParallel, MaxInFlightExpr: expr}
		var te *TemplateError
		if _, err := LoopMaxInFlight(&each, b.scope); !errors.As(err, &te) || te.Field != "loop.spec.max_in_flight" {
			t.Errorf("%s: err = %v, want a max_in_flight template error", expr, err)
		}
	}
}

// NoETL binds `output` in a step's arcs and its `set`, as a rule sees it:
// pft_flow_v2's load_next_facility routes on output.data.row_count and
// sets ctx from output.data.rows[0]. Without it the `| default(0)` there
// silently took the wrong branch.
func TestArcsAndStepSetReadOutput(t *testing.T) {
	t.Parallel()
	pb, err := playbook.Parse("pb.yaml", []byte(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: o, path: t/o}
workflow:
  - step: start
    tool: {kind: noop}
    set:
      ctx.first: "{{ output.data.rows[0].id if (output.data.row_count | default(0) | int) > 0 else 0 }}"
    next:
      arcs:
        - step: some
          when: "{{ (output.data.row_count | default(0) | int) > 0 }}"
        - step: none
  - step: some
    tool: {kind: noop}
  - step: none
    tool: {kind: noop}
`), playbook.KindSet{"noop": {"result"}})
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]any{"rows": []any{map[string]any{"id": 7.0}}, "row_count": 1.0}
	s := Scope{Results: map[string]any{"start": res}}
	fired, err := NextSteps(pb, pb.ByName["start"], s)
	if err != nil || len(fired) != 1 || fired[0].Step != "some" {
		t.Fatalf("fired %+v, %v; want some (output.data.row_count is 1)", fired, err)
	}
	set, err := StepSet(pb.ByName["start"], s, res)
	if err != nil || !reflect.DeepEqual(set, map[string]any{"ctx.first": 7}) {
		t.Fatalf("set %#v, %v; want ctx.first 7 from output.data.rows[0]", set, err)
	}
}
