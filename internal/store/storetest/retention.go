package storetest

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

// Retention is the conformance suite of store.Retention (and, for drivers
// that implement it, store.Partitioner). A driver package calls it as it
// calls Run; open must return a driver that implements store.Retention.
func Retention(t *testing.T, open func(t *testing.T) store.Driver) {
	cases := []testCase{
		{"DeletesEndedKeepsLiveAndRecent", retentionKeeps},
		{"BatchesAreBounded", retentionBatches},
		{"ChildWaitsForParent", retentionChildren},
		{"LongRunningKeepsOldEvents", retentionLongRunning},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(setup(t, open))
		})
	}
}

// retentionDay is how far back the suite's "old" executions live: the
// cutoff is retentionDay*30 before now, as with MILLRACE_RETENTION=30d.
const retentionPeriod = 30 * 24 * time.Hour

// oldIDs hands out ids as a generator would have issued them at a past
// time: ids are time-ordered, and PostgreSQL partitions by them.
type oldIDs struct{ seq atomic.Int64 }

func (o *oldIDs) at(t time.Time) int64 { return ids.Floor(t) + o.seq.Add(1) }

var pastIDs oldIDs

// world is one execution and every row it owns.
type world struct {
	exec     store.Execution
	events   []int64
	commands []int64
	loops    []int64
	blobs    []int64
	outbox   int64
}

// addOldExecution stores an execution started at start with events,
// a command, a loop, an outbox row and two blobs (one referenced by the
// execution's result, one only by an event's, as package flow stores a
// result that differs from the projected one). end nil leaves it running.
func (b *bundle) addOldExecution(parent int64, start time.Time, end *time.Time) world {
	b.t.Helper()
	cat := b.addCatalog(fmt.Sprintf("flows/%d", b.ids.Next()), "steps: []")
	w := world{exec: store.Execution{ExecutionID: pastIDs.at(start), CatalogID: cat.CatalogID, Path: cat.Path, Version: cat.Version,
		Status: api.ExecRunning, StartedAt: start, ParentExecutionID: parent}}
	ref := func(id int64) []byte { return fmt.Appendf(nil, `{"$ref":"blob:%d","size":3}`, id) }
	b.mustWrite("insert an old execution", func(tx store.Tx) error {
		ctx := b.ctx()
		if err := tx.ExecutionInsert(ctx, w.exec); err != nil {
			return err
		}
		for i := range 3 {
			at := start.Add(time.Duration(i) * time.Minute)
			e := store.Event{EventID: pastIDs.at(at), ExecutionID: w.exec.ExecutionID, EventType: "step.enter", Step: "build", CreatedAt: at}
			if i == 2 {
				blob := pastIDs.at(at)
				if err := tx.BlobPut(ctx, blob, []byte("big"), at); err != nil {
					return err
				}
				w.blobs = append(w.blobs, blob)
				e.EventType, e.Result = "call.done", ref(blob)
			}
			if err := tx.EventInsert(ctx, e); err != nil {
				return err
			}
			w.events = append(w.events, e.EventID)
		}
		c := b.newCommand(w.exec.ExecutionID, start)
		c.EventID = pastIDs.at(start)
		c.CommandID = fmt.Sprintf("%d:build:%d", w.exec.ExecutionID, c.EventID)
		if err := tx.CommandInsert(ctx, c); err != nil {
			return err
		}
		w.commands = append(w.commands, c.EventID)
		o := b.newOutbox(c.EventID)
		o.CreatedAt = start
		if err := tx.OutboxInsert(ctx, o); err != nil {
			return err
		}
		w.outbox = o.ID
		l := b.newLoop(w.exec.ExecutionID)
		l.LoopID, l.CreatedAt, l.UpdatedAt = pastIDs.at(start), start, start
		if err := tx.LoopInsert(ctx, l); err != nil {
			return err
		}
		w.loops = append(w.loops, l.LoopID)
		if end == nil {
			return nil
		}
		blob := pastIDs.at(*end)
		if err := tx.BlobPut(ctx, blob, []byte("big"), *end); err != nil {
			return err
		}
		w.blobs = append(w.blobs, blob)
		if err := tx.EventInsert(ctx, store.Event{EventID: pastIDs.at(*end), ExecutionID: w.exec.ExecutionID, EventType: "playbook.completed",
			Result: ref(blob), CreatedAt: *end}); err != nil {
			return err
		}
		return tx.ExecutionFinish(ctx, w.exec.ExecutionID, api.ExecCompleted, ref(blob), "", *end)
	})
	if end == nil {
		return w
	}
	w.events = append(w.events, 0) // the completion event: counted, id not needed
	return w
}

// ensureDays makes the partitions a driver that has them needs for the
// suite's old rows, before any row is written (the default partition
// would otherwise hold them).
func (b *bundle) ensureDays(from time.Time, days int) {
	b.t.Helper()
	if p, ok := b.drv.(store.Partitioner); ok {
		if _, err := p.EnsurePartitions(b.ctx(), from, days); err != nil {
			b.fatalf("EnsurePartitions: %v", err)
		}
	}
}

// retire runs retention as package retention does: batches until one
// deletes nothing (a parent's batch frees its children for the next),
// then partitions.
func (b *bundle) retire(cutoff time.Time, limit int) (batches []store.RetentionBatch, drop store.PartitionDrop) {
	b.t.Helper()
	r, ok := b.drv.(store.Retention)
	if !ok {
		b.fatalf("driver does not implement store.Retention")
	}
	release, ok, err := r.RetentionLock(b.ctx())
	if err != nil || !ok {
		b.fatalf("RetentionLock = %v, %v; want the lock", ok, err)
	}
	defer release()
	for {
		n, err := r.RetentionDelete(b.ctx(), cutoff, limit)
		if err != nil {
			b.fatalf("RetentionDelete: %v", err)
		}
		batches = append(batches, n)
		if n.Executions == 0 {
			break
		}
	}
	if p, ok := b.drv.(store.Partitioner); ok {
		if drop, err = p.RetentionDropPartitions(b.ctx(), cutoff); err != nil {
			b.fatalf("RetentionDropPartitions: %v", err)
		}
	}
	return batches, drop
}

// wantGone checks that nothing of w is left.
func (b *bundle) wantGone(what string, w world) {
	b.t.Helper()
	b.mustRead(what, func(q store.Querier) error {
		ctx := b.ctx()
		if _, err := q.ExecutionGet(ctx, w.exec.ExecutionID); !errors.Is(err, store.ErrNotFound) {
			b.errorf("%s: ExecutionGet = %v, want ErrNotFound", what, err)
		}
		evs, err := q.EventList(ctx, w.exec.ExecutionID)
		if err != nil || len(evs) != 0 {
			b.errorf("%s: EventList = %d events, %v; want none", what, len(evs), err)
		}
		cmds, err := q.CommandListByExecution(ctx, w.exec.ExecutionID)
		if err != nil || len(cmds) != 0 {
			b.errorf("%s: CommandListByExecution = %d, %v; want none", what, len(cmds), err)
		}
		loops, err := q.LoopListByExecution(ctx, w.exec.ExecutionID)
		if err != nil || len(loops) != 0 {
			b.errorf("%s: LoopListByExecution = %d, %v; want none", what, len(loops), err)
		}
		for _, id := range w.blobs {
			if _, err := q.BlobGet(ctx, id); !errors.Is(err, store.ErrNotFound) {
				b.errorf("%s: BlobGet(%d) = %v, want ErrNotFound", what, id, err)
			}
		}
		if b.outboxHas(q, w.outbox) {
			b.errorf("%s: outbox row %d is still there", what, w.outbox)
		}
		return nil
	})
}

// wantKept checks that every row of w is still there.
func (b *bundle) wantKept(what string, w world) {
	b.t.Helper()
	b.mustRead(what, func(q store.Querier) error {
		ctx := b.ctx()
		if _, err := q.ExecutionGet(ctx, w.exec.ExecutionID); err != nil {
			b.errorf("%s: ExecutionGet = %v, want the execution", what, err)
		}
		evs, err := q.EventList(ctx, w.exec.ExecutionID)
		if err != nil || len(evs) != len(w.events) {
			b.errorf("%s: EventList = %d events, %v; want %d", what, len(evs), err, len(w.events))
		}
		after, err := q.EventsAfter(ctx, w.exec.ExecutionID, 0, nil, 100)
		if err != nil || len(after) != len(w.events) {
			b.errorf("%s: EventsAfter = %d events, %v; want %d", what, len(after), err, len(w.events))
		}
		cmds, err := q.CommandListByExecution(ctx, w.exec.ExecutionID)
		if err != nil || len(cmds) != len(w.commands) {
			b.errorf("%s: CommandListByExecution = %d, %v; want %d", what, len(cmds), err, len(w.commands))
		}
		loops, err := q.LoopListByExecution(ctx, w.exec.ExecutionID)
		if err != nil || len(loops) != len(w.loops) {
			b.errorf("%s: LoopListByExecution = %d, %v; want %d", what, len(loops), err, len(w.loops))
		}
		for _, id := range w.blobs {
			if _, err := q.BlobGet(ctx, id); err != nil {
				b.errorf("%s: BlobGet(%d) = %v, want the blob", what, id, err)
			}
		}
		if !b.outboxHas(q, w.outbox) {
			b.errorf("%s: outbox row %d is gone", what, w.outbox)
		}
		return nil
	})
}

func (b *bundle) outboxHas(q store.Querier, id int64) bool {
	msgs, err := q.OutboxFetch(b.ctx(), b.now.Add(24*time.Hour), 10000)
	if err != nil {
		b.fatalf("OutboxFetch: %v", err)
	}
	for _, m := range msgs {
		if m.ID == id {
			return true
		}
	}
	return false
}

func ago(now time.Time, d time.Duration) *time.Time {
	t := now.Add(-d)
	return &t
}

// retentionKeeps: executions that ended before the cutoff go with every
// row; one still running and one that ended after the cutoff (both
// started long ago) keep every row.
func retentionKeeps(b *bundle) {
	const day = 24 * time.Hour
	cutoff := b.now.Add(-retentionPeriod)
	b.ensureDays(b.now.Add(-45*day), 46)
	oldDone := b.addOldExecution(0, b.now.Add(-40*day), ago(b.now, 39*day))
	oldFailed := b.addOldExecution(0, b.now.Add(-35*day), ago(b.now, 34*day))
	running := b.addOldExecution(0, b.now.Add(-40*day), nil)
	recent := b.addOldExecution(0, b.now.Add(-40*day), ago(b.now, 10*day))
	fresh := b.addOldExecution(0, b.now.Add(-time.Hour), ago(b.now, time.Minute))

	batches, _ := b.retire(cutoff, 1000)
	var deleted int64
	for _, n := range batches {
		deleted += n.Executions
	}
	if deleted != 2 {
		b.errorf("retention deleted %d executions in %v, want 2", deleted, batches)
	}
	b.wantGone("an execution that ended 39 days ago", oldDone)
	b.wantGone("an execution that ended 34 days ago", oldFailed)
	b.wantKept("a running execution that started 40 days ago", running)
	b.wantKept("an execution that started 40 days ago and ended 10 days ago", recent)
	b.wantKept("an execution of the last hour", fresh)

	// A second run finds nothing, and keeps the same rows.
	batches, _ = b.retire(cutoff, 1000)
	if len(batches) != 1 || batches[0].Executions != 0 {
		b.errorf("second run = %v, want one empty batch", batches)
	}
	b.wantKept("the running execution after a second run", running)
}

// retentionBatches: more executions than one batch take several batches,
// none larger than the limit.
func retentionBatches(b *bundle) {
	const day, n, limit = 24 * time.Hour, 25, 10
	b.ensureDays(b.now.Add(-45*day), 46)
	var ws []world
	for i := range n {
		ws = append(ws, b.addOldExecution(0, b.now.Add(-40*day+time.Duration(i)*time.Minute), ago(b.now, 39*day)))
	}
	keep := b.addOldExecution(0, b.now.Add(-40*day), nil)
	batches, _ := b.retire(b.now.Add(-retentionPeriod), limit)
	var got []int64
	for _, x := range batches {
		got = append(got, x.Executions)
		if x.Executions > limit || x.Commands > limit || x.Loops > limit {
			b.errorf("a batch deleted %+v, more than %d executions' rows", x, limit)
		}
	}
	if fmt.Sprint(got) != "[10 10 5 0]" {
		b.errorf("batches deleted %v executions, want [10 10 5 0]", got)
	}
	for _, w := range ws {
		b.wantGone("a batched execution", w)
	}
	b.wantKept("the running execution", keep)
}

// retentionChildren: a child that ended long ago stays while its parent
// runs, and goes after its parent.
func retentionChildren(b *bundle) {
	const day = 24 * time.Hour
	b.ensureDays(b.now.Add(-45*day), 46)
	parent := b.addOldExecution(0, b.now.Add(-40*day), nil)
	child := b.addOldExecution(parent.exec.ExecutionID, b.now.Add(-40*day), ago(b.now, 39*day))
	cutoff := b.now.Add(-retentionPeriod)
	b.retire(cutoff, 1000)
	b.wantKept("a child of a running parent", child)
	b.wantKept("the running parent", parent)

	b.mustWrite("finish the parent", func(tx store.Tx) error {
		return tx.ExecutionFinish(b.ctx(), parent.exec.ExecutionID, api.ExecCompleted, nil, "", b.now.Add(-31*day))
	})
	b.retire(cutoff, 1000)
	b.wantGone("the parent, ended 31 days ago", parent)
	b.wantGone("its child", child)
}

// retentionLongRunning: on PostgreSQL the partition that holds a running
// execution's first events is dropped; its events move and stay readable,
// and go once it has ended long enough. On SQLite the same holds by rows.
func retentionLongRunning(b *bundle) {
	const day = 24 * time.Hour
	b.ensureDays(b.now.Add(-45*day), 46)
	long := b.addOldExecution(0, b.now.Add(-40*day), nil)
	neighbour := b.addOldExecution(0, b.now.Add(-40*day).Add(time.Minute), ago(b.now, 39*day))
	cutoff := b.now.Add(-retentionPeriod)
	_, drop := b.retire(cutoff, 1000)
	if _, ok := b.drv.(store.Partitioner); ok {
		if drop.Dropped == 0 || drop.Moved != int64(len(long.events)) {
			b.errorf("partition drop = %+v, want partitions dropped and the %d events of the running execution moved", drop, len(long.events))
		}
		b.wantNoPartitionBefore(cutoff)
	}
	b.wantKept("a running execution whose first events sat in a dropped partition", long)
	b.wantGone("its neighbour in that partition", neighbour)

	b.mustWrite("finish the long-running execution", func(tx store.Tx) error {
		return tx.ExecutionFinish(b.ctx(), long.exec.ExecutionID, api.ExecCompleted, nil, "", b.now.Add(-31*day))
	})
	b.retire(cutoff, 1000)
	b.wantGone("the long-running execution once it ended 31 days ago", long)
}

// wantNoPartitionBefore checks that no range partition ends at or below
// cutoff's id any more.
func (b *bundle) wantNoPartitionBefore(cutoff time.Time) {
	b.t.Helper()
	parts, err := b.drv.(store.Partitioner).EventPartitions(b.ctx())
	if err != nil {
		b.fatalf("EventPartitions: %v", err)
	}
	for _, p := range parts {
		if !p.Default && p.To <= ids.Floor(cutoff) {
			b.errorf("partition %s (ids %d..%d) ends before the cutoff and was not dropped", p.Name, p.From, p.To)
		}
	}
}
