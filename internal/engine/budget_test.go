package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/playbook"
)

// budgetErr renders src under limits and returns the budget error it must
// end with, failing the test if it ends otherwise or slowly.
func budgetErr(t *testing.T, src string, b *Budget) *BudgetError {
	t.Helper()
	start := time.Now()
	_, err := Render(src, Scope{Budget: b})
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("%s: took %v", src, took) // a generous bound: the budget stopped it
	}
	var be *BudgetError
	if !errors.As(err, &be) {
		t.Fatalf("%s: err = %v, want a BudgetError", src, err)
	}
	return be
}

func TestBudgetStopsEndlessLoops(t *testing.T) {
	t.Parallel()
	b := &Budget{Limits: Limits{Timeout: 200 * time.Millisecond}}
	for _, src := range []string{
		`{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}x`,
		`{% set xs = range(10000) %}{% for i in xs %}{% if i >= 0 %}{% for j in xs %}{{ j if false }}{% endfor %}{% endif %}{% endfor %}x`,
		`{% macro f(n) %}{% for i in range(50) %}{% endfor %}{{ f(n+1) ~ f(n+2) if n < 60 }}{% endmacro %}{{ f(0) }}`,
	} {
		be := budgetErr(t, src, b)
		if be.Setting != SettingTemplateTimeout || !strings.Contains(be.Error(), "MILLRACE_TEMPLATE_TIMEOUT_MS (200 ms)") {
			t.Errorf("%s: %v", src, be)
		}
	}
}

func TestBudgetStopsHugeOutput(t *testing.T) {
	t.Parallel()
	// A long timeout: the size budget must stop these, not the clock.
	b := &Budget{Limits: Limits{MaxBytes: 1 << 16, Timeout: 10 * time.Minute}}
	for _, src := range []string{
		`{% for i in range(10000) %}{% for j in range(10000) %}xxxx{% endfor %}{% endfor %}`,
		`{{ "x" * 1000000000 }}`,
		`{{ "x" * 9223372036854775807 }}`,
		`{% set ns = namespace(s="x") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}`,
		`{% set ns = namespace(s="x") %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}`,
		`{% set big %}{% for i in range(100000) %}{{ "y" * 1000 }}{% endfor %}{% endset %}{{ big | length }}`,
		`{% macro m() %}{% for i in range(100000) %}abcdefgh{% endfor %}{% endmacro %}{{ m() | length }}`,
		`{{ "a" | center(1000000000) }}`,
		`{{ "%1000000000d" | format(1) }}`,
		`{{ ("x" * 1000) | replace("x", "y" * 1000) }}`,
		`{{ range(100000) | join("x" * 1000) }}`,
		`{{ "a\nb" | indent(1000000) }}`,
		`{{ lipsum(n=100000) }}`,
	} {
		be := budgetErr(t, src, b)
		if be.Setting != SettingTemplateMaxBytes || !strings.Contains(be.Error(), "MILLRACE_TEMPLATE_MAX_BYTES (65536 bytes)") {
			t.Errorf("%s: %v", src, be)
		}
	}
}

func TestBudgetBoundsItems(t *testing.T) {
	t.Parallel()
	b := &Budget{Limits: Limits{MaxItems: 1000, Timeout: 10 * time.Minute}}
	for _, src := range []string{
		`{{ range(1000000000) | length }}`,
		`{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}`,
	} {
		be := budgetErr(t, src, b)
		if be.Setting != SettingLoopMaxItems || !strings.Contains(be.Error(), "MILLRACE_LOOP_MAX_ITEMS (1000 items)") {
			t.Errorf("%s: %v", src, be)
		}
	}
	src := `
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: p, path: tests/p}
workload: {xs: [1, 2, 3, 4, 5]}
workflow:
  - step: start
    loop: {in: "{{ xs }}", iterator: i}
    tool: {kind: http, url: "http://x/{{ i }}"}
`
	pb, err := playbook.Parse("p.yaml", []byte(src), testKinds)
	if err != nil {
		t.Fatal(err)
	}
	scope := Scope{Workload: map[string]any{"xs": []any{1, 2, 3, 4, 5}}, Budget: &Budget{Limits: Limits{MaxItems: 3}}}
	_, err = LoopItems(pb.ByName["start"], scope)
	if err == nil || !strings.Contains(err.Error(), "loop over 5 items exceeds MILLRACE_LOOP_MAX_ITEMS (3 items)") {
		t.Fatalf("LoopItems: %v", err)
	}
	var be *BudgetError
	if !errors.As(err, &be) {
		t.Fatalf("LoopItems error %v does not unwrap to a BudgetError", err)
	}
	scope.Budget.Limits.MaxItems = 5
	if items, err := LoopItems(pb.ByName["start"], scope); err != nil || len(items) != 5 {
		t.Fatalf("LoopItems at the limit: %v %v", items, err)
	}
}

func TestBudgetMacroRecursionStops(t *testing.T) {
	t.Parallel()
	// Without the nesting limit this grows the stack until the runtime
	// kills the process.
	slow := Scope{Budget: &Budget{Limits: Limits{Timeout: 10 * time.Minute}}}
	_, err := Render(`{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}x`, slow)
	if err == nil || !strings.Contains(err.Error(), "nested macro calls exceed 100") {
		t.Fatalf("err = %v", err)
	}
	// Nesting below the limit, and many sequential calls, still render.
	out, err := Render(`{% macro f(n) %}{{ f(n - 1) if n > 0 else "." }}{% endmacro %}{% for i in range(100) %}{{ f(50) }}{% endfor %}`, slow)
	if err != nil || len(out.(string)) != 100 {
		t.Fatalf("out %v err %v", out, err)
	}
}

func TestBudgetCancelledByContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Render(`{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}x`,
		Scope{Budget: &Budget{Ctx: ctx, Limits: Limits{Timeout: time.Hour}}})
	if !IsCancelled(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want a cancelled rendering", err)
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("cancellation took %v", took)
	}
	// An ended context stops the next rendering before it starts.
	if _, err := RenderValue(map[string]any{"a": "{{ 1 }}"}, Scope{Budget: &Budget{Ctx: ctx}}); !IsCancelled(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestBudgetLeavesOrdinaryTemplatesAlone(t *testing.T) {
	t.Parallel()
	b := &Budget{Limits: Limits{MaxBytes: 64, MaxItems: 10}}
	for src, want := range map[string]any{
		`{{ 1 + 2 }} {{ "a" ~ 1 }} {{ [1] + [2] }} {{ "ab" * 3 }} {{ 2 * 3 }} {{ 1.5 * 2 }}`: "3 a1 [1, 2] ababab 6 3.0",
		`{{ range(3) | list }}`:                               []any{0, 1, 2},
		`{% for i in range(10, 0, -3) %}{{ i }},{% endfor %}`: "10,7,4,1,",
		`{{ [1, 2] + [3] }}`:                                  []any{1, 2, 3},
		`{{ "a-b" | replace("-", "+") }}`:                     "a+b",
		`{{ "%05d" | format(7) }}`:                            "00007",
	} {
		got, err := Render(src, Scope{Budget: b})
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		if s, ok := want.(string); ok {
			if got != s {
				t.Errorf("%s = %#v, want %q", src, got, s)
			}
		} else if len(got.([]any)) != len(want.([]any)) {
			t.Errorf("%s = %#v, want %#v", src, got, want)
		}
	}
}
