package playbook

import (
	"testing"
)

func cursorDoc(loop string) string {
	return "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: c, path: t/c}\nworkflow:\n" +
		"  - step: start\n" +
		"    loop:\n" + loop +
		"    tool:\n      - name: work\n        kind: python\n        code: x\n"
}

// NoETL's cursor loop parses into Loop.Cursor and Loop.Frame; frame keys
// left out take their defaults.
func TestCursorLoopParses(t *testing.T) {
	t.Parallel()
	pb, err := Parse("pb.yaml", []byte(cursorDoc(`      cursor:
        kind: postgres
        auth: "{{ pg_auth }}"
        claim: "UPDATE w SET s = 'c' WHERE id IN (SELECT id FROM w LIMIT {{ __frame_max_rows }}) RETURNING id"
      iterator: page
      spec:
        mode: cursor
        max_in_flight: 4
        frame: {max_rows: 50, max_seconds: 30, max_bytes: 67108864, lease_seconds: 120, heartbeat_seconds: 30, row_concurrency: 2, process: row}
`)), testKinds)
	if err != nil {
		t.Fatal(err)
	}
	l := pb.ByName["start"].Loop
	if l.Mode != LoopCursor || l.MaxInFlight != 4 || l.Iterator != "page" || l.In != "" {
		t.Fatalf("loop = %+v", l)
	}
	if c := l.Cursor; c == nil || c.Kind != CursorKindPostgres || c.Auth != "{{ pg_auth }}" || c.Claim == "" {
		t.Fatalf("cursor = %+v", l.Cursor)
	}
	if f := l.Frame; f.MaxRows != 50 || f.RowConcurrency != 2 || f.Process != FrameRow || f.MaxSeconds != 30 || f.LeaseSeconds != 120 {
		t.Fatalf("frame = %+v", l.Frame)
	}

	pb, err = Parse("pb.yaml", []byte(cursorDoc("      cursor: {auth: pg, claim: \"SELECT 1 AS id\"}\n      spec: {mode: cursor}\n")), testKinds)
	if err != nil {
		t.Fatal(err)
	}
	if l := pb.ByName["start"].Loop; l.Cursor.Kind != CursorKindPostgres || l.MaxInFlight != 1 || l.Frame.MaxRows != 1 || l.Frame.RowConcurrency != 1 || l.Frame.Process != FrameRow || l.Iterator != DefaultIterator {
		t.Fatalf("defaults: loop %+v", l)
	}
}

func TestCursorLoopProblems(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		loop string
		want []want
	}{
		"cursor without mode": {"      cursor: {auth: pg, claim: x}\n", []want{{7, `loop.cursor needs loop.spec.mode cursor`, "spec: {mode: cursor}"}}},
		"cursor with spec but no mode": {"      cursor: {auth: pg, claim: x}\n      spec: {max_in_flight: 2}\n",
			[]want{{8, `loop.cursor needs loop.spec.mode cursor`, "mode: cursor"}}},
		"cursor in parallel mode": {"      cursor: {auth: pg, claim: x}\n      spec: {mode: parallel}\n", []want{{8, "a loop with `cursor` runs in mode cursor, not parallel", "mode: cursor"}}},
		"mode without cursor":     {"      in: \"{{ [1] }}\"\n      spec: {mode: cursor}\n", []want{{8, `loop mode cursor needs loop.cursor`, "claim: <UPDATE ... RETURNING>"}}},
		"in and cursor":           {"      in: \"{{ [1] }}\"\n      cursor: {auth: pg, claim: x}\n      spec: {mode: cursor}\n", []want{{7, "loop has both `in` and `cursor`", "rows are what its claim returns"}}},
		"missing auth and claim": {"      cursor: {kind: postgres}\n      spec: {mode: cursor}\n", []want{
			{7, `loop.cursor has no auth`, "postgres credential"}, {7, `loop.cursor has no claim`, "__frame_max_rows"}}},
		"other kind":           {"      cursor: {kind: mysql, auth: pg, claim: x}\n      spec: {mode: cursor}\n", []want{{7, `unknown cursor kind "mysql"`, "kind: postgres"}}},
		"unknown cursor key":   {"      cursor: {auth: pg, claim: x, options: {}}\n      spec: {mode: cursor}\n", []want{{7, `unknown key "options" in loop.cursor`, "kind, auth, claim"}}},
		"frame outside cursor": {"      in: \"{{ [1] }}\"\n      spec: {mode: parallel, frame: {max_rows: 2}}\n", []want{{8, `loop.spec.frame belongs to cursor loops`, "remove frame"}}},
		"bad frame values": {"      cursor: {auth: pg, claim: x}\n      spec:\n        mode: cursor\n        frame: {max_rows: 0, row_concurrency: two, max_seconds: -1, process: batch, window: 3}\n", []want{
			{10, `frame.max_rows must be an integer >= 1, got the scalar "0"`, "max_rows: 10"},
			{10, `frame.row_concurrency must be an integer >= 1`, ""},
			{10, `frame.max_seconds must be a positive number, got the scalar "-1"`, ""},
			{10, `unknown loop.spec.frame.process "batch"`, "row"},
			{10, `unknown key "window" in loop.spec.frame`, "max_rows, max_seconds"},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, cursorDoc(tc.loop), testKinds, tc.want, true)
		})
	}
}

// FuzzCursorLoop: the parser reports, never panics, on any variation
// of a cursor loop.
func FuzzCursorLoop(f *testing.F) {
	f.Add("      cursor: {auth: pg, claim: x}\n      spec: {mode: cursor, frame: {max_rows: 3}}\n")
	f.Add("      cursor: [1]\n      spec: {mode: cursor, frame: 7}\n")
	f.Add("      cursor: {kind: ~, auth: {a: 1}, claim: [x]}\n      spec: {frame: ~}\n")
	f.Fuzz(func(t *testing.T, loop string) {
		_, _, _ = Check("pb.yaml", []byte(cursorDoc(loop)), testKinds)
	})
}
