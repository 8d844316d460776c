package playbook

import (
	"reflect"
	"strings"
	"testing"
)

// NoETL's names for the SQL tools' keys parse to Millrace's keys, so the
// worker runs them as if the playbook had used Millrace's.
func TestToolAliasesRenamed(t *testing.T) {
	t.Parallel()
	src := head + `  - step: start
    tool: {kind: postgres, credential: pg, pool: {max_size: 2}, queries: ["SELECT 1", "SELECT 2"]}
    next: {arcs: [{step: load}]}
  - step: load
    tool:
      - {name: a, kind: postgres, auth: pg, cmd: "SELECT 3", pool: {}}
      - {name: b, kind: duckdb, commands: "SELECT 4"}
`
	pb, err := Parse("pb.yaml", []byte(src), langKinds)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pb.Steps[0].Tool, map[string]any{"kind": "postgres", "auth": "pg", "command": []any{"SELECT 1", "SELECT 2"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("start tool = %v, want %v (pool has no effect and is dropped)", got, want)
	}
	if got, want := pb.Steps[1].Tasks[0].Tool, map[string]any{"kind": "postgres", "auth": "pg", "command": "SELECT 3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("task a = %v, want %v", got, want)
	}
	if got, want := pb.Steps[1].Tasks[1].Tool, map[string]any{"kind": "duckdb", "query": "SELECT 4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("task b = %v, want %v", got, want)
	}
}

func TestToolAliasProblems(t *testing.T) {
	t.Parallel()
	src := head + `  - step: start
    tool:
      kind: postgres
      auth: pg
      command: SELECT 1
      query: SELECT 2
      credential: pg2
      pool: 4
`
	checkProblems(t, src, langKinds, []want{
		{12, `has both "command" (line 11) and "query", which say the same thing`, `"query" is an alias of "command"`},
		{13, `has both "auth" (line 10) and "credential"`, `"credential" is an alias of "auth"`},
		{14, `tool.pool must be a mapping, got`, "Millrace opens one connection per command"},
	}, false)

	src = head + `  - step: start
    tool: {kind: postgres, auth: pg, cmds: [SELECT 1], queries: [SELECT 2]}
`
	checkProblems(t, src, langKinds, []want{
		{8, `has both "cmds" (line 8) and "queries"`, `"queries" is an alias of "command"`},
	}, false)
}

// A workbook call may name a key of a group differently from its entry: the
// call's key replaces the entry's, so the worker never sees both (before,
// an entry's url and a call's endpoint both reached the http tool, which
// refused them at run time).
func TestWorkbookCallAliasOverridesEntry(t *testing.T) {
	t.Parallel()
	src := "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/t}\nworkbook:\n" +
		"  - name: get\n    tool: {kind: http, url: http://entry, json: {a: 1}}\n" +
		"  - name: sql\n    tool: {kind: postgres, auth: pg, command: SELECT 1}\n" +
		"workflow:\n  - step: start\n    tool: {kind: workbook, name: get, endpoint: http://call, data: {b: 2}}\n    next: {arcs: [{step: b}]}\n" +
		"  - step: b\n    tool:\n      - {name: sql, kind: workbook, query: SELECT 2, credential: pg2}\n"
	kinds := KindSet{"http": {"url", "endpoint", "json", "data"}, "postgres": {"auth", "command"}}
	pb, err := Parse("pb.yaml", []byte(src), kinds)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pb.Steps[0].Tool, map[string]any{"kind": "http", "url": "http://call", "data": map[string]any{"b": 2}}; !reflect.DeepEqual(got, want) {
		t.Errorf("call of get = %v, want %v", got, want)
	}
	if got, want := pb.Steps[1].Tasks[0].Tool, map[string]any{"kind": "postgres", "auth": "pg2", "command": "SELECT 2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("call of sql = %v, want %v", got, want)
	}
	// Two names of one group in the call itself are still refused.
	checkProblems(t, strings.Replace(src, "endpoint: http://call", "endpoint: http://call, url: http://x", 1), kinds, []want{
		{11, `has both "endpoint" (line 11) and "url", which say the same thing`, `"endpoint" is an alias of "url"`},
	}, true)
}
