package commands

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/tools"
)

// maxCursorErrors bounds the row errors a drain slot's result lists: the
// counts stay exact, the list shows the first few.
const maxCursorErrors = 10

// runCursor is one drain slot of a cursor loop, as NoETL's cursor worker:
// it runs the claim (up to max_rows rows, bound as {{ __frame_max_rows }})
// and the tasks for each claimed row, row_concurrency rows at a time (or
// once for the whole claim with process: frame), then claims again, until
// a claim returns no rows or a task list breaks. A row whose tasks fail is
// counted and listed, and the drain goes on, as in NoETL: the row stays
// claimed in the user's table, whose claim SQL decides when to hand it out
// again. Every claimed row is run before the slot returns, so none is lost
// on Millrace's side; a claim that fails, or the command's end (timeout,
// lost lease), fails the slot and so the loop.
//
// The result is NoETL's cursor worker outcome: status ok (or partial when
// a row failed), processed, failed, breaks, frame_count (claims that
// returned rows), worker_slot_id, and errors (the first few, with their
// rows). Context the tasks assign is published as a task list's is, later
// rows winning.
func runCursor(ctx context.Context, cl api.Command, p api.Payload, keychain map[string]any) (any, map[string]any, error) {
	c := p.Cursor
	scope := payloadScope(ctx, cl, p)
	claimScope := scope.With("__frame_max_rows", c.MaxRows).With("__worker_slot_id", c.Slot)
	v, err := engine.RenderAtWorker(map[string]any{"kind": c.Kind, "auth": c.Auth, "command": c.Claim}, claimScope, keychain)
	if err != nil {
		return nil, nil, &tools.Error{Kind: "template", Message: fmt.Sprintf("step %s: loop.cursor: %v", cl.Step, err)}
	}
	claim, _ := v.(map[string]any)
	d := &drain{step: cl.Step, cursor: c, tasks: p.Tasks, keychain: keychain}
	for !d.broke {
		res, err := tools.Run(ctx, claim)
		if err != nil {
			return d.result(), nil, claimError(cl.Step, err)
		}
		rows := claimedRows(res)
		if len(rows) == 0 {
			break
		}
		if c.Process == playbook.FrameWhole {
			d.run(ctx, scope, rows, d.processed+d.failed, 0, len(rows))
		} else {
			d.frame(ctx, scope, rows)
		}
		d.frames++
		if err := ctx.Err(); err != nil {
			return d.result(), nil, err // timeout or lost lease: the command ends here
		}
	}
	return d.result(), d.published, nil
}

// claimError names the claim in a failed claim's error.
func claimError(step string, err error) error {
	var te *tools.Error
	if errors.As(err, &te) {
		e := *te
		e.Message = fmt.Sprintf("step %s: loop.cursor claim: %s", step, te.Message)
		return &e
	}
	return fmt.Errorf("step %s: loop.cursor claim: %w", step, err)
}

// claimedRows is the rows of a claim's postgres result.
func claimedRows(res any) []any {
	m, _ := res.(map[string]any)
	rows, _ := m["rows"].([]any)
	return rows
}

// drain is the state of one drain slot.
type drain struct {
	step     string
	cursor   *api.Cursor
	tasks    []api.Task
	keychain map[string]any

	mu                                sync.Mutex
	processed, failed, breaks, frames int
	broke                             bool
	errors                            []any
	published                         map[string]any
}

// frame runs the tasks once per row, row_concurrency at a time, and
// returns once every row has run.
func (d *drain) frame(ctx context.Context, scope engine.Scope, rows []any) {
	base := d.processed + d.failed
	sem := make(chan struct{}, max(d.cursor.RowConcurrency, 1))
	var wg sync.WaitGroup
	for i, row := range rows {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d.run(ctx, scope, row, base+i, i, 1)
		}()
	}
	wg.Wait()
}

// run runs the task list once over item (a row, or a frame's rows, which
// count as n rows).
func (d *drain) run(ctx context.Context, scope engine.Scope, item any, index, frameRow, n int) {
	s := engine.RowScope(scope, d.cursor.Iterator, item, index, d.cursor.Slot, d.frames, frameRow)
	_, published, broke, err := runTaskList(ctx, d.step, d.tasks, s, d.keychain)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.failed += n
		if len(d.errors) < maxCursorErrors {
			d.errors = append(d.errors, map[string]any{"row": item, "error": err.Error()})
		}
		return
	}
	d.processed += n
	if broke {
		d.breaks += n
		d.broke = true // NoETL stops the slot after the frame
	}
	if len(published) > 0 {
		if d.published == nil {
			d.published = map[string]any{}
		}
		maps.Copy(d.published, published)
	}
}

func (d *drain) result() map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	status := "ok"
	if d.failed > 0 {
		status = "partial"
	}
	out := map[string]any{"status": status, "processed": d.processed, "failed": d.failed, "breaks": d.breaks,
		"frame_count": d.frames, "worker_slot_id": d.cursor.Slot}
	if len(d.errors) > 0 {
		out["errors"] = d.errors
	}
	return out
}
