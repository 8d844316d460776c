package playbook

import (
	"reflect"
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
		{12, `has both "command" (line 11) and "query"`, `"query" is an alias of "command"`},
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
