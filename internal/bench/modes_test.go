package bench

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// The smoke runs of scripts/bench14.sh's modes, small enough for CI: they
// check what the modes do, never how fast.

// checkStorage asserts a storage reading of stored executions.
func checkStorage(t *testing.T, res *Result, stored int64) {
	t.Helper()
	s := res.Storage
	if s == nil {
		t.Fatal("no storage reading")
	}
	if s.Executions != stored || s.Bytes <= 0 || s.BytesPerExecution != float64(s.Bytes)/float64(stored) {
		t.Errorf("storage = %+v, want %d executions stored and a positive size per execution", s, stored)
	}
	for _, table := range []string{"executions", "events", "commands"} {
		if s.Tables[table] <= 0 {
			t.Errorf("storage lacks table %s: %v", table, s.Tables)
		}
	}
}

func TestDrainSQLite(t *testing.T) {
	b := setup(t)
	o := b.opts(200, 1)
	o.Drain = true
	res := b.run(o)
	checkSane(t, res, 200)
	if !res.Drain || res.DrainSeconds <= 0 || res.DrainSeconds > res.Seconds || res.DrainPerSecond < res.ExecutionsPerSecond {
		t.Errorf("drain %.3fs at %.1f/s, whole run %.3fs at %.1f/s: want a drain inside the run, at least as fast",
			res.DrainSeconds, res.DrainPerSecond, res.Seconds, res.ExecutionsPerSecond)
	}
	checkStorage(t, res, 200)
	if res.Statements != nil {
		t.Errorf("statements %+v on SQLite, want none", res.Statements)
	}
}

// A prefilled execution is the template's rows again, with fresh ids that
// every column spelling an id agrees on.
func TestPrefillSQLite(t *testing.T) {
	b := setup(t)
	o := b.opts(50, 2)
	o.Prefill = 120
	o.Keep = true
	path := strings.TrimPrefix(o.Store, "sqlite:")
	res := b.run(o)
	checkSane(t, res, 50)
	if res.Prefilled != 120 || res.PrefillSeconds <= 0 {
		t.Errorf("prefilled %d in %.3fs, want 120", res.Prefilled, res.PrefillSeconds)
	}
	checkStorage(t, res, 170)
	d, err := sql.Open("sqlite", "file:"+filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	checkCopies(t, d, 170, 2)
}

func TestPrefillDrainPostgresTwoServers(t *testing.T) {
	b := setup(t)
	o := b.opts(60, 1)
	o.Store, o.Keep, o.Prefill, o.Servers, o.Workers = pgtest.URL(), true, 150, 2, 3
	res := b.run(o)
	t.Cleanup(func() { b.exec("DROP SCHEMA IF EXISTS " + pgx.Identifier{res.Schema}.Sanitize() + " CASCADE") })
	checkSane(t, res, 60)
	if res.Servers != 2 || res.Workers != 3 || res.Prefilled != 150 {
		t.Errorf("servers %d, workers %d, prefilled %d; want 2, 3, 150", res.Servers, res.Workers, res.Prefilled)
	}
	checkStorage(t, res, 210)
	d, err := sql.Open("pgx", pgtest.WithSearchPath(pgtest.URL(), res.Schema))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	checkCopies(t, d, 210, 1)

	o = b.opts(80, 1)
	o.Store, o.Drain = pgtest.URL(), true
	res = b.run(o)
	checkSane(t, res, 80)
	if res.DrainPerSecond <= 0 {
		t.Errorf("drain rate %.1f/s, want a positive rate", res.DrainPerSecond)
	}
	checkStorage(t, res, 80)
}

// checkCopies asserts that the store holds executions, each with the
// events and commands a steps-long chain writes, every id unique and
// every command id naming its own execution and event.
func checkCopies(t *testing.T, d *sql.DB, executions, steps int) {
	t.Helper()
	var n, events, distinctExec, commands, selfNamed, completed int
	q := `SELECT (SELECT count(*) FROM executions),
		(SELECT count(*) FROM events),
		(SELECT count(DISTINCT execution_id) FROM events),
		(SELECT count(*) FROM commands),
		(SELECT count(*) FROM commands WHERE command_id = CAST(execution_id AS TEXT) || ':' || step || ':' || CAST(event_id AS TEXT)),
		(SELECT count(*) FROM executions WHERE status = 'completed' AND ended_at >= started_at)`
	if err := d.QueryRow(q).Scan(&n, &events, &distinctExec, &commands, &selfNamed, &completed); err != nil {
		t.Fatal(err)
	}
	// A chain of k noop steps: playbook.started and .completed, and per
	// step command.issued, claimed, started, completed and step.exit.
	perExec := 2 + 5*steps
	if n != executions || distinctExec != executions || events != executions*perExec || commands != executions*steps ||
		selfNamed != commands || completed != executions {
		t.Errorf("executions %d (%d completed), events %d over %d executions, commands %d (%d naming their own ids); want %d, %d events each, %d commands each",
			n, completed, events, distinctExec, commands, selfNamed, executions, perExec, steps)
	}
}

func TestModeOptionsRejected(t *testing.T) {
	t.Parallel()
	base := func() Options {
		return Options{Store: "sqlite::memory:", Executions: 1, Concurrency: 1, Steps: 1, Workers: 1, WorkerConcurrency: 1, Timeout: 1e9}
	}
	for name, o := range map[string]func(*Options){
		"two servers on SQLite": func(o *Options) { o.Servers = 2 },
		"drain with prefill":    func(o *Options) { o.Drain, o.Prefill = true, 10 },
		"negative prefill":      func(o *Options) { o.Prefill = -1 },
		"drain on a server":     func(o *Options) { o.Store, o.Server, o.Drain = "", "http://127.0.0.1:1", true },
	} {
		opts := base()
		o(&opts)
		if _, err := Run(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%s: err = %v, want an error naming the flags", name, err)
		}
	}
}

func TestStatementsSince(t *testing.T) {
	t.Parallel()
	before := statementCounts{1: {Calls: 10, Query: "SELECT 1"}, 2: {Calls: 5, Query: "INSERT  INTO\n events"}}
	after := statementCounts{1: {Calls: 10, Query: "SELECT 1"}, 2: {Calls: 705, Query: "INSERT  INTO\n events"}, 3: {Calls: 100, Query: "UPDATE commands"}}
	st := statementsSince(before, after, 100)
	if st.Total != 800 || st.PerExecution != 8 || len(st.Top) != 2 ||
		st.Top[0] != (StatementUse{Calls: 700, PerExecution: 7, Query: "INSERT INTO events"}) || st.Top[1].Calls != 100 {
		t.Errorf("statementsSince = %+v, want 800 calls, 8 per execution, INSERT INTO events (7 each) then UPDATE commands", st)
	}
	if statementsSince(nil, after, 100) != nil {
		t.Error("statementsSince without a first reading, want nil")
	}
}
