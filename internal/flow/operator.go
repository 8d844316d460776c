package flow

import (
	"context"
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
	exec, err := s.endByRequest(ctx, execID, api.ExecFailed, msg, api.EvPlaybookFailed, "was failed by an operator")
	if err == nil {
		mExecFailed.Inc()
	}
	return exec, err
}
