package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// testScope is an execution midway through: workload plus a fetch result
// decoded from JSON, as the server stores it.
func testScope(t testing.TB) Scope {
	t.Helper()
	var fetch any
	if err := json.Unmarshal([]byte(`{"status": 200, "ratio": 0.5, "data": {"items": [1, 2, 3], "name": "n"}}`), &fetch); err != nil {
		t.Fatal(err)
	}
	return Scope{
		ExecutionID: 42,
		Workload:    map[string]any{"message": "hi", "count": 3, "token": "s3cret", "shadowed": "workload"},
		Results:     map[string]any{"fetch": fetch, "shadowed": "result"},
	}
}

func TestVars(t *testing.T) {
	t.Parallel()

	s := testScope(t)
	vars := s.Vars()
	if vars["message"] != "hi" || vars["execution_id"] != int64(42) {
		t.Errorf("vars = %#v", vars)
	}
	if w := vars["workload"].(map[string]any); w["message"] != "hi" || w["shadowed"] != "workload" {
		t.Errorf("workload = %#v", w)
	}
	if vars["shadowed"] != "result" {
		t.Errorf("shadowed = %v, want step result to win over workload key", vars["shadowed"])
	}
	// JSON integers render as integers; the caller's result is not modified.
	if got := vars["fetch"].(resultMap)["status"]; got != 200 {
		t.Errorf("fetch.status = %#v, want int 200", got)
	}
	if got := s.Results["fetch"].(map[string]any)["status"]; got != float64(200) {
		t.Errorf("original result mutated: %#v", got)
	}
	if v := (Scope{}).Vars(); v["workload"] == nil || v["execution_id"] != int64(0) {
		t.Errorf("empty scope vars = %#v", v)
	}
}

func TestRender(t *testing.T) {
	t.Parallel()

	tests := []struct {
		tmpl string
		want any
	}{
		// Native values for a lone expression.
		{"{{ fetch.data }}", map[string]any{"items": []any{1, 2, 3}, "name": "n"}},
		{"{{ fetch.data.items }}", []any{1, 2, 3}},
		{"  {{ fetch.status }}\n", 200},
		{"{{ fetch.ratio }}", 0.5},
		{"{{ {'a': 1, 'b': [true, none]} }}", map[string]any{"a": 1, "b": []any{true, nil}}},
		{"{{ [1, 'x'] }}", []any{1, "x"}},
		{"{{ count }}", 3},
		{"{{ count > 2 }}", true},
		{"{{ 'big' if count > 2 else 'small' }}", "big"},
		// String interpolation.
		{"{{ message }}, world", "hi, world"},
		{"/items/{{ fetch.status }}/{{ execution_id }}", "/items/200/42"},
		{"{{ message }}{{ count }}", "hi3"},
		{"{% if count > 2 %}many{% else %}few{% endif %}", "many"},
		// Workload keys top level and via workload.
		{"{{ workload.message }}", "hi"},
		{"{{ workload['count'] }}", 3},
		{"{{ execution_id }}", 42},
		// Filters.
		{"{{ fetch.data | tojson }}", `{"items":[1,2,3],"name":"n"}`},
		{"{{ missing | default('fallback') }}", "fallback"},
		{"{{ fetch.data.items | length }}", 3},
		{"{{ token | b64encode }}", "czNjcmV0"},
		{"{{ 'czNjcmV0' | b64decode }}", "s3cret"},
		{"Basic {{ (message ~ ':' ~ token) | b64encode }}", "Basic aGk6czNjcmV0"},
		// No template syntax: returned untouched.
		{"plain {text} with } braces", "plain {text} with } braces"},
		{"", ""},
	}
	s := testScope(t)
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			t.Parallel()
			got, err := Render(tt.tmpl, s)
			if err != nil {
				t.Fatalf("Render(%q): %v", tt.tmpl, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Render(%q) = %#v (%T), want %#v (%T)", tt.tmpl, got, got, tt.want, tt.want)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	t.Parallel()

	tests := []struct{ tmpl, reason string }{
		{"{{ nope }}", `variable "nope" is undefined`},
		{"x {{ nope }} y", `variable "nope" is undefined`},
		{"{{ nope.deeper }}", `variable "nope" is undefined`},
		{"{{ fetch.nope }}", "attribute 'nope' not found"},
		{"{{ message", "syntax error"},
		{"{{ message | nosuchfilter }}", "nosuchfilter"},
		{"{{ count % 0 }}", "divide by zero"},
		{"n={{ count % 0 }}", "divide by zero"},
		// Templates cannot reach the server's filesystem.
		{"{% include '/etc/passwd' %}", "/etc/passwd"},
	}
	s := testScope(t)
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			t.Parallel()
			got, err := Render(tt.tmpl, s)
			var te *TemplateError
			if !errors.As(err, &te) {
				t.Fatalf("Render(%q) = %#v, %v; want *TemplateError", tt.tmpl, got, err)
			}
			if !strings.Contains(te.Reason, tt.reason) {
				t.Errorf("reason = %q, want it to contain %q", te.Reason, tt.reason)
			}
		})
	}
	// Parse errors are cached too and keep failing the same way.
	_, err1 := Render("{{ broken", s)
	_, err2 := Render("{{ broken", s)
	if err1 == nil || err2 == nil || err1.Error() != err2.Error() {
		t.Errorf("cached parse error differs: %v / %v", err1, err2)
	}
}

func TestRenderValue(t *testing.T) {
	t.Parallel()

	in := map[string]any{
		"list":   []any{"{{ count }}", "lit", 7, map[string]any{"m": "{{ message }}!"}},
		"native": "{{ fetch.data.items }}",
		"n":      nil,
	}
	got, err := RenderValue(in, testScope(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"list":   []any{3, "lit", 7, map[string]any{"m": "hi!"}},
		"native": []any{1, 2, 3},
		"n":      nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RenderValue = %#v\nwant %#v", got, want)
	}
	if in["list"].([]any)[0] != "{{ count }}" {
		t.Error("RenderValue modified its input")
	}

	_, err = RenderValue(map[string]any{"a": []any{"ok", map[string]any{"b": "{{ nope }}"}}}, testScope(t))
	var te *TemplateError
	if !errors.As(err, &te) || te.Field != "a[1].b" {
		t.Errorf("err = %v, want *TemplateError with Field a[1].b", err)
	}
}

func TestRenderConcurrent(t *testing.T) {
	t.Parallel()

	// Compiled templates are shared across executions; rendering them from
	// many goroutines with different scopes must not mix values.
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := Scope{ExecutionID: int64(i), Workload: map[string]any{"who": fmt.Sprint("w", i)}}
			for range 200 {
				got, err := Render("{{ who }}-{{ execution_id }}", s)
				if want := fmt.Sprintf("w%d-%d", i, i); err != nil || got != want {
					errs <- fmt.Errorf("got %v, %v; want %s", got, err, want)
					return
				}
				if n, err := Render("{{ execution_id }}", s); err != nil || n != i {
					errs <- fmt.Errorf("native got %v, %v; want %d", n, err, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEvalWhen(t *testing.T) {
	t.Parallel()

	tests := []struct {
		expr string
		want bool
	}{
		{"{{ fetch.status == 200 }}", true},
		{"fetch.status == 200", true},
		{"  {{ fetch.status == 201 }} ", false},
		{"fetch.data.items | length > 2", true},
		{"workload.count >= 3 and message == 'hi'", true},
		{"{{ fetch.data.name }}", true},
		{"{{ fetch.data.items[5] is defined }}", false},
		{"", true},
		{"false", false},
		{"0", false},
		{"[]", false},
		// Undefined is falsy, including reaching into it.
		{"{{ nope }}", false},
		{"nope == 1", false},
		{"nope.status == 200", false},
		{"{{ fetch.nope }}", false},
		{"not nope", true},
		// Text output is read as a boolean.
		{"{% if fetch %}true{% endif %}", true},
		{"{% if nope %}true{% endif %}", false},
		{"{{ count > 10 }} ", false},
		{"{% if count %}False{% endif %}", false},
	}
	s := testScope(t)
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			got, err := EvalWhen(tt.expr, s)
			if err != nil {
				t.Fatalf("EvalWhen(%q): %v", tt.expr, err)
			}
			if got != tt.want {
				t.Errorf("EvalWhen(%q) = %v, want %v", tt.expr, got, tt.want)
			}
		})
	}

	_, err := EvalWhen("fetch.status ==", s)
	var te *TemplateError
	if !errors.As(err, &te) || te.Field != "when" || !strings.Contains(te.Reason, "syntax error") {
		t.Errorf("EvalWhen syntax error = %v, want *TemplateError on field when", err)
	}
}

func FuzzRender(f *testing.F) {
	for _, s := range []string{"{{ fetch.data }}", "x {{ message | b64encode }}", "{% for i in fetch.data.items %}{{ i }}{% endfor %}", "{{ nope.x }}", "{{ 1 if a else b }}"} {
		f.Add(s)
	}
	s := testScope(f)
	f.Fuzz(func(t *testing.T, tmpl string) {
		v, err := Render(tmpl, s)
		if err != nil {
			var te *TemplateError
			if !errors.As(err, &te) || v != nil {
				t.Fatalf("Render(%q) = %#v, %v", tmpl, v, err)
			}
		}
		_, _ = EvalWhen(tmpl, s)
	})
}

func TestTemplateCacheEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	first := cacheKey{"{{ first_of_many }}", true}
	compile(first.src, first.strict)
	if !cache.Contains(first) {
		t.Fatal("a compiled template was not cached")
	}
	var last cacheKey
	for i := range MaxCachedTemplates {
		last = cacheKey{fmt.Sprintf("{{ many_%d }}", i), true}
		compile(last.src, last.strict)
	}
	if cache.Len() > MaxCachedTemplates {
		t.Fatalf("%d templates cached, want at most %d", cache.Len(), MaxCachedTemplates)
	}
	if cache.Contains(first) || !cache.Contains(last) {
		t.Fatalf("after %d newer templates: first cached %v, last cached %v; want the first evicted, the last kept",
			MaxCachedTemplates, cache.Contains(first), cache.Contains(last))
	}
}

// TestJobVariable: NoETL's `job` is the execution's id as strings under
// uuid, execution_id and id, and a workload key of that name does not hide
// it (as execution_id).
func TestJobVariable(t *testing.T) {
	t.Parallel()
	s := testScope(t)
	s.ExecutionID = 9007199254740993 // beyond float64's exact integers
	s.Workload["job"] = "workload"
	for tmpl, want := range map[string]any{
		"{{ job.uuid }}":                      "9007199254740993",
		"{{ job.execution_id }}":              "9007199254740993",
		"{{ job.id }}":                        "9007199254740993",
		"run-{{ job.uuid }}":                  "run-9007199254740993",
		"{{ job.uuid == execution_id ~ '' }}": true,
	} {
		got, err := Render(tmpl, s)
		if err != nil {
			t.Fatalf("Render(%q): %v", tmpl, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Render(%q) = %#v, want %#v", tmpl, got, want)
		}
	}
}

// TestEnvNotExposed: templates never see the process environment (it holds
// a server's and a worker's secrets; docs/decisions.md). NoETL's
// `{{ env.X | default('d') }}` renders the default.
func TestEnvNotExposed(t *testing.T) {
	t.Setenv("MILLRACE_TEST_ENV_SECRET", "s3cret")
	s := testScope(t)
	if got, err := Render("{{ env.MILLRACE_TEST_ENV_SECRET | default('nvidia_simulator') }}", s); err != nil || got != "nvidia_simulator" {
		t.Errorf("env.X | default = %#v, %v; want the default", got, err)
	}
	if got, err := Render("{{ env.MILLRACE_TEST_ENV_SECRET }}", s); err == nil || got != nil {
		t.Errorf("env.X = %#v, %v; want an error", got, err)
	}
}
