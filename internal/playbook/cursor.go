package playbook

import (
	"math"

	"go.yaml.in/yaml/v3"
)

// Cursor is NoETL's loop.cursor: the SQL that claims the next rows of a
// work table. Millrace runs it on a postgres connection of the credential
// Auth names, with {{ __frame_max_rows }} bound to Frame.MaxRows; the rows
// it returns are the loop's rows. Claiming each row once (FOR UPDATE SKIP
// LOCKED, a status column) is the claim's own business, as in NoETL.
type Cursor struct {
	Kind  string // CursorKindPostgres, the only kind (NoETL's default)
	Auth  string // a credential name, or a template rendering to one
	Claim string // SQL, a template; UPDATE ... RETURNING the claimed rows
}

// CursorKindPostgres is the one cursor kind NoETL validates, and the default.
const CursorKindPostgres = "postgres"

// Frame is NoETL's loop.spec.frame: how a cursor loop claims and runs rows.
// MaxRows, RowConcurrency and Process take effect; the other fields are
// kept as written and have none (see docs/playbooks.md, "Cursor loops"):
// NoETL's own engine only logs max_seconds and max_bytes, and leases are
// the claim SQL's business (its reclaim of stale rows), while the worker
// heartbeats the command that drains.
type Frame struct {
	MaxRows        int    // rows per claim ({{ __frame_max_rows }}); 1 when unset
	RowConcurrency int    // rows of one claim run at once; 1 when unset
	Process        string // FrameRow (default): tasks once per row; FrameWhole: once per claim
	// Advisory: accepted as NoETL's, no effect here.
	MaxSeconds, MaxBytes, LeaseSeconds, HeartbeatSeconds float64
}

// Frame processing modes (Frame.Process).
const (
	FrameRow   = "row"   // iter.<iterator> is one claimed row
	FrameWhole = "frame" // iter.<iterator> is the list of rows of one claim
)

var (
	cursorKeys = []string{"kind", "auth", "claim"}
	frameKeys  = []string{"max_rows", "max_seconds", "max_bytes", "lease_seconds", "heartbeat_seconds", "row_concurrency", "process"}
)

const cursorShape = "`cursor: {kind: postgres, auth: <credential>, claim: \"UPDATE ... RETURNING ...\"}`"

func (ps *parser) cursor(e entry, step string) *Cursor {
	if deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, "write "+cursorShape, "step %q: loop.cursor must be a mapping, got %s", step, describe(e.val))
		return nil
	}
	f := ps.mapping(e.val, "in loop.cursor", cursorKeys)
	c := &Cursor{Kind: CursorKindPostgres}
	if k, ok := f["kind"]; ok {
		if kind, ok := ps.scalar(k.val, "loop.cursor.kind"); ok && kind != CursorKindPostgres {
			ps.atNode(k.val, "use kind: postgres; NoETL validates no other cursor kind either", "step %q: unknown cursor kind %q", step, kind)
		}
	}
	if a, ok := f["auth"]; ok {
		c.Auth, _ = ps.scalar(a.val, "loop.cursor.auth")
	} else {
		ps.atNode(e.key, "add `auth: <credential>`, the postgres credential the claim runs with", "step %q: loop.cursor has no auth", step)
	}
	if cl, ok := f["claim"]; ok {
		c.Claim, _ = ps.scalar(cl.val, "loop.cursor.claim")
	} else {
		ps.atNode(e.key, "add `claim:` SQL that claims up to {{ __frame_max_rows }} rows and returns them (UPDATE ... RETURNING)", "step %q: loop.cursor has no claim", step)
	}
	return c
}

// defaultFrame is a cursor loop's frame when it gives none, as NoETL's.
var defaultFrame = Frame{MaxRows: 1, RowConcurrency: 1, Process: FrameRow}

func (ps *parser) frame(e entry, step string) Frame {
	fr := defaultFrame
	if isNull(e.val) {
		return fr
	}
	if deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, "write `frame: {max_rows: 50, row_concurrency: 1}`", "step %q: loop.spec.frame must be a mapping, got %s", step, describe(e.val))
		return fr
	}
	f := ps.mapping(e.val, "in loop.spec.frame", frameKeys)
	whole := func(key string, into *int) {
		v, ok := f[key]
		if !ok {
			return
		}
		d := deref(v.val)
		var n int
		if d.Kind != yaml.ScalarNode || d.ShortTag() != "!!int" || d.Decode(&n) != nil || n < 1 {
			ps.atNode(v.val, "write a whole number >= 1, e.g. `"+key+": 10`", "step %q: loop.spec.frame.%s must be an integer >= 1, got %s", step, key, describe(v.val))
			return
		}
		*into = n
	}
	whole("max_rows", &fr.MaxRows)
	whole("row_concurrency", &fr.RowConcurrency)
	positive := func(key string, into *float64) {
		v, ok := f[key]
		if !ok {
			return
		}
		d := deref(v.val)
		var x float64
		if d.Kind != yaml.ScalarNode || (d.ShortTag() != "!!int" && d.ShortTag() != "!!float") || d.Decode(&x) != nil || math.IsNaN(x) || math.IsInf(x, 0) || x <= 0 {
			ps.atNode(v.val, "write a positive number, e.g. `"+key+": 30`", "step %q: loop.spec.frame.%s must be a positive number, got %s", step, key, describe(v.val))
			return
		}
		*into = x
	}
	positive("max_seconds", &fr.MaxSeconds)
	positive("max_bytes", &fr.MaxBytes)
	positive("lease_seconds", &fr.LeaseSeconds)
	positive("heartbeat_seconds", &fr.HeartbeatSeconds)
	if p, ok := f["process"]; ok {
		switch v, _ := ps.scalar(p.val, "loop.spec.frame.process"); v {
		case FrameRow, FrameWhole:
			fr.Process = v
		case "":
		default:
			ps.atNode(p.val, "use row (the tasks run once per claimed row) or frame (once per claim, with the list of rows)", "step %q: unknown loop.spec.frame.process %q", step, v)
		}
	}
	return fr
}
