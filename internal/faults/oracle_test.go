package faults

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// verifyReport is the shape of `millrace verify --json`.
type verifyReport struct {
	OK         bool            `json:"ok"`
	Checked    map[string]int  `json:"checked"`
	Violations []verifyProblem `json:"violations"`
}

type verifyProblem struct {
	Check       string `json:"check"`
	ExecutionID int64  `json:"execution_id"`
	CommandID   int64  `json:"command_id"`
	Detail      string `json:"detail"`
}

// oracleChecks are the store invariants, each a query returning
// (execution_id, command_id, detail) per violation. A stand-in for
// `millrace verify` until it lands; the same names.
var oracleChecks = []struct{ name, sql string }{
	{"command_completed_once", `
		SELECT e.execution_id, coalesce(c.event_id, 0), count(*)::text || ' command.completed events for ' || e.command_id
		FROM events e LEFT JOIN commands c ON c.command_id = e.command_id AND c.execution_id = e.execution_id
		WHERE e.event_type = 'command.completed'
		GROUP BY e.execution_id, e.command_id, c.event_id HAVING count(*) > 1`},
	{"terminal_event", `
		SELECT x.execution_id, 0, 'status ' || x.status || ' without its terminal event'
		FROM executions x
		WHERE x.status <> 'running' AND NOT EXISTS (
			SELECT 1 FROM events e WHERE e.execution_id = x.execution_id
			AND e.event_type IN ('playbook.completed', 'playbook.failed', 'execution.cancelled'))`},
	{"execution_projection", `
		SELECT x.execution_id, 0, 'status ' || x.status || ' but last terminal event ' || t.event_type
		FROM executions x JOIN (
			SELECT DISTINCT ON (execution_id) execution_id, event_type FROM events
			WHERE event_type IN ('playbook.completed', 'playbook.failed', 'execution.cancelled')
			ORDER BY execution_id, event_id DESC) t ON t.execution_id = x.execution_id
		WHERE x.status <> CASE t.event_type WHEN 'playbook.completed' THEN 'completed'
			WHEN 'playbook.failed' THEN 'failed' ELSE 'cancelled' END`},
	{"command_projection", `
		SELECT c.execution_id, c.event_id, 'command ' || c.command_id || ' is completed without a command.completed event'
		FROM commands c WHERE c.status = 'completed' AND NOT EXISTS (
			SELECT 1 FROM events e WHERE e.execution_id = c.execution_id
			AND e.command_id = c.command_id AND e.event_type = 'command.completed')`},
}

// verifyStore runs the oracle against the store at dbURL and fails t if it
// cannot; violations are returned, not failed on (Check does that).
func verifyStore(t *testing.T, dbURL string) verifyReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("verify: connect: %v", err)
	}
	defer conn.Close(ctx)
	rep := verifyReport{Checked: map[string]int{}}
	for _, table := range []string{"executions", "commands", "events"} {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatalf("verify: count %s: %v", table, err)
		}
		rep.Checked[table] = n
	}
	for _, c := range oracleChecks {
		rows, err := conn.Query(ctx, c.sql)
		if err != nil {
			t.Fatalf("verify: %s: %v", c.name, err)
		}
		for rows.Next() {
			v := verifyProblem{Check: c.name}
			if err := rows.Scan(&v.ExecutionID, &v.CommandID, &v.Detail); err != nil {
				t.Fatalf("verify: %s: %v", c.name, err)
			}
			rep.Violations = append(rep.Violations, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("verify: %s: %v", c.name, err)
		}
	}
	rep.OK = len(rep.Violations) == 0
	return rep
}
