package flow

import (
	"context"
	"errors"
	"strings"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// MaxFailReason bounds an operator's reason, which is kept in the
// execution row and its playbook.failed event.
const MaxFailReason = 4096

// Fail is the operator's way out of an execution stuck on a server error
// that repeats (a report the server cannot apply, a step it cannot
// advance): the execution fails with playbook.failed carrying reason, as
// if a step had failed: its live commands are cancelled (their workers
// get 409 on their next report), its running children too, and a parent
// waiting for it fails its step. An execution that already ended
// is ErrExecutionEnded.
func (s *Service) Fail(ctx context.Context, execID int64, reason string) (store.Execution, error) {
	reason = strings.TrimSpace(reason)
	switch {
	case reason == "":
		return store.Execution{}, errorf(ErrInvalid, "reason: say why the execution is failed (it is kept in its playbook.failed event)")
	case len(reason) > MaxFailReason:
		return store.Execution{}, errorf(ErrInvalid, "reason: %d bytes, at most %d", len(reason), MaxFailReason)
	}
	msg := "failed by an operator: " + reason
	var exec store.Execution
	woke := 0
	err := s.st.Do(ctx, execID, func(ctx context.Context, tx store.Tx) error {
		var err error
		if exec, err = tx.LockExecution(ctx, execID); err != nil {
			return err
		}
		if exec.Status != api.ExecRunning {
			return errorf(ErrExecutionEnded, "execution %d is already %s", execID, exec.Status)
		}
		now := s.now()
		if _, err := tx.CommandCancelExecution(ctx, execID, now); err != nil {
			return err
		}
		if err := tx.ExecutionFinish(ctx, execID, api.ExecFailed, nil, msg, now); err != nil {
			return err
		}
		exec.Status, exec.EndedAt, exec.Error = api.ExecFailed, &now, msg
		if err := tx.ExecutionTouch(ctx, execID, s.ids.Next()); err != nil {
			return err
		}
		if err := s.event(ctx, tx, store.Event{ExecutionID: execID, EventType: api.EvPlaybookFailed, Status: string(api.ExecFailed), Error: msg}, now); err != nil {
			return err
		}
		// As Cancel: its running children are cancelled, and a parent
		// waiting for it fails its step.
		if err := s.cancelChildren(ctx, tx, execID, "was failed by an operator", now); err != nil {
			return err
		}
		woke, err = s.childEnded(ctx, tx, &exec, now)
		return err
	})
	if err == nil {
		s.states.drop(execID)
		mExecFailed.Inc()
	}
	if woke > 0 {
		s.wake()
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Execution{}, errorf(ErrExecutionNotFound, "execution %d does not exist", execID)
	}
	return exec, err
}
