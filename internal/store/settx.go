package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// setTx is the Tx the group commit gives its callers (Store.Do). The
// write-only rows (ExecutionInsert, EventInsert, CommandInsert,
// OutboxInsert, ExecutionTouch) are not sent one by one: they join a
// pending Writes set that goes to the driver as one statement per kind
// (SetTx.WriteSet). In a plain shared transaction the set collects every
// caller's rows; with savepoints, each caller's own (see flush points).
//
// The set must be written before any statement that could see its rows.
// The rules:
//   - Savepoint, Release and Commit write it first: rows written before a
//     savepoint must not be undone by RollbackTo, and a caller's failing
//     row must fail inside its own savepoint (at Release at the latest), as
//     a row-by-row insert would. RollbackTo and Rollback drop it: every
//     pending row was written after the latest savepoint.
//   - Statements on one command (CommandGet, CommandClaim, CommandStart,
//     CommandHeartbeat, CommandFinish, CommandMarkRepublished and the
//     ManyTx forms) read and change only that command's row. They write the
//     set first only when it holds that command or an outbox row of it.
//   - Statements on one execution (ExecutionGet, LockExecution,
//     LockExecutions) read only that execution's row. They write the set
//     first only when it holds that execution or a touch of it.
//   - Every other method writes the set first, then runs. A method Tx gains
//     later must be added here (the compiler insists: setTx does not embed
//     the driver's Tx, so nothing can bypass these rules); if it is not
//     provably one of the cases above, it writes the set first.
//
// Deferral changes only when a row is sent, never what it says, and the
// schema has no triggers or foreign keys through which a deferred row
// could change another statement's outcome. Within one set, executions are
// inserted before touches, so a touch of an execution inserted after it
// in call order still finds it; several touches of one execution keep the
// last (LastTouches).
type setTx struct {
	tx Tx
	w  Writes
	// execs and cmds index the pending rows by execution and by command
	// (commands and outbox rows), for the targeted rules above.
	execs map[int64]struct{}
	cmds  map[int64]struct{}
}

var _ Tx = (*setTx)(nil)

func newSetTx(tx Tx) *setTx {
	return &setTx{tx: tx, execs: map[int64]struct{}{}, cmds: map[int64]struct{}{}}
}

// flush writes the pending set. The rows are the driver's from then on,
// even when it fails: the transaction is then unusable until RollbackTo.
func (t *setTx) flush(ctx context.Context) error {
	if t.w.Len() == 0 {
		return nil
	}
	err := t.tx.WriteSet(ctx, &t.w)
	t.drop()
	return err
}

// drop forgets the pending set.
func (t *setTx) drop() {
	t.w.Reset()
	clear(t.execs)
	clear(t.cmds)
}

// flushFor writes the pending set if it holds a row of key in idx.
func (t *setTx) flushFor(ctx context.Context, idx map[int64]struct{}, key int64) error {
	if _, ok := idx[key]; ok {
		return t.flush(ctx)
	}
	return nil
}

// --- deferred writes ----------------------------------------------------

func (t *setTx) ExecutionInsert(_ context.Context, e Execution) error {
	t.w.Executions = append(t.w.Executions, e)
	t.execs[e.ExecutionID] = struct{}{}
	return nil
}

func (t *setTx) ExecutionTouch(_ context.Context, id, revision int64) error {
	t.w.Touches = append(t.w.Touches, Touch{ExecutionID: id, Revision: revision})
	t.execs[id] = struct{}{}
	return nil
}

func (t *setTx) EventInsert(_ context.Context, e Event) error {
	t.w.Events = append(t.w.Events, e)
	return nil
}

func (t *setTx) CommandInsert(_ context.Context, c Command) error {
	t.w.Commands = append(t.w.Commands, c)
	t.cmds[c.EventID] = struct{}{}
	return nil
}

func (t *setTx) OutboxInsert(_ context.Context, msg OutboxMsg) error {
	t.w.Outbox = append(t.w.Outbox, msg)
	t.cmds[msg.EventID] = struct{}{}
	return nil
}

// WriteSet adds w to the pending set.
func (t *setTx) WriteSet(ctx context.Context, w *Writes) error {
	for _, e := range w.Executions {
		_ = t.ExecutionInsert(ctx, e)
	}
	for _, e := range w.Events {
		_ = t.EventInsert(ctx, e)
	}
	for _, c := range w.Commands {
		_ = t.CommandInsert(ctx, c)
	}
	for _, m := range w.Outbox {
		_ = t.OutboxInsert(ctx, m)
	}
	for _, tc := range w.Touches {
		_ = t.ExecutionTouch(ctx, tc.ExecutionID, tc.Revision)
	}
	return nil
}

// --- transaction control ------------------------------------------------

func (t *setTx) Commit(ctx context.Context) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.Commit(ctx)
}

func (t *setTx) Rollback(ctx context.Context) error {
	t.drop()
	return t.tx.Rollback(ctx)
}

func (t *setTx) Savepoint(ctx context.Context, name string) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.Savepoint(ctx, name)
}

func (t *setTx) RollbackTo(ctx context.Context, name string) error {
	t.drop()
	return t.tx.RollbackTo(ctx, name)
}

func (t *setTx) Release(ctx context.Context, name string) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.Release(ctx, name)
}

// --- statements on one command ------------------------------------------

func (t *setTx) CommandGet(ctx context.Context, eventID int64) (Command, error) {
	if err := t.flushFor(ctx, t.cmds, eventID); err != nil {
		return Command{}, err
	}
	return t.tx.CommandGet(ctx, eventID)
}

func (t *setTx) CommandClaim(ctx context.Context, p ClaimParams) (Command, error) {
	if err := t.flushFor(ctx, t.cmds, p.EventID); err != nil {
		return Command{}, err
	}
	return t.tx.CommandClaim(ctx, p)
}

func (t *setTx) CommandStart(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (Command, error) {
	if err := t.flushFor(ctx, t.cmds, eventID); err != nil {
		return Command{}, err
	}
	return t.tx.CommandStart(ctx, eventID, workerID, attempt, tokenID, now, ttl)
}

func (t *setTx) CommandHeartbeat(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (Command, error) {
	if err := t.flushFor(ctx, t.cmds, eventID); err != nil {
		return Command{}, err
	}
	return t.tx.CommandHeartbeat(ctx, eventID, workerID, attempt, tokenID, now, ttl)
}

func (t *setTx) CommandFinish(ctx context.Context, p FinishParams) (Command, error) {
	if err := t.flushFor(ctx, t.cmds, p.EventID); err != nil {
		return Command{}, err
	}
	return t.tx.CommandFinish(ctx, p)
}

func (t *setTx) CommandMarkRepublished(ctx context.Context, eventID int64, now time.Time, traceParent string) (Command, error) {
	if err := t.flushFor(ctx, t.cmds, eventID); err != nil {
		return Command{}, err
	}
	return t.tx.CommandMarkRepublished(ctx, eventID, now, traceParent)
}

func (t *setTx) CommandClaimMany(ctx context.Context, ps []ClaimParams) ([]ClaimOutcome, error) {
	for _, p := range ps {
		if _, ok := t.cmds[p.EventID]; ok {
			if err := t.flush(ctx); err != nil {
				return nil, err
			}
			break
		}
	}
	return t.tx.CommandClaimMany(ctx, ps)
}

func (t *setTx) CommandFinishMany(ctx context.Context, ps []FinishParams) ([]FinishOutcome, error) {
	for _, p := range ps {
		if _, ok := t.cmds[p.EventID]; ok {
			if err := t.flush(ctx); err != nil {
				return nil, err
			}
			break
		}
	}
	return t.tx.CommandFinishMany(ctx, ps)
}

// --- statements on one execution ----------------------------------------

func (t *setTx) ExecutionGet(ctx context.Context, id int64) (Execution, error) {
	if err := t.flushFor(ctx, t.execs, id); err != nil {
		return Execution{}, err
	}
	return t.tx.ExecutionGet(ctx, id)
}

func (t *setTx) LockExecution(ctx context.Context, id int64) (Execution, error) {
	if err := t.flushFor(ctx, t.execs, id); err != nil {
		return Execution{}, err
	}
	return t.tx.LockExecution(ctx, id)
}

func (t *setTx) LockExecutions(ctx context.Context, ids []int64) (map[int64]Execution, error) {
	for _, id := range ids {
		if _, ok := t.execs[id]; ok {
			if err := t.flush(ctx); err != nil {
				return nil, err
			}
			break
		}
	}
	return t.tx.LockExecutions(ctx, ids)
}

// --- everything else: write the set first -------------------------------

func (t *setTx) ProjectGet(ctx context.Context, name string) (Project, error) {
	if err := t.flush(ctx); err != nil {
		return Project{}, err
	}
	return t.tx.ProjectGet(ctx, name)
}

func (t *setTx) ProjectGetByID(ctx context.Context, id int64) (Project, error) {
	if err := t.flush(ctx); err != nil {
		return Project{}, err
	}
	return t.tx.ProjectGetByID(ctx, id)
}

func (t *setTx) ProjectList(ctx context.Context) ([]Project, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.ProjectList(ctx)
}

func (t *setTx) QueryGet(ctx context.Context, uuid string) (Query, error) {
	if err := t.flush(ctx); err != nil {
		return Query{}, err
	}
	return t.tx.QueryGet(ctx, uuid)
}

func (t *setTx) QueryList(ctx context.Context, projectID int64, offset, limit int) ([]Query, int64, error) {
	if err := t.flush(ctx); err != nil {
		return nil, 0, err
	}
	return t.tx.QueryList(ctx, projectID, offset, limit)
}

func (t *setTx) QueryCached(ctx context.Context, projectID int64, cacheKey string, now time.Time) (Query, error) {
	if err := t.flush(ctx); err != nil {
		return Query{}, err
	}
	return t.tx.QueryCached(ctx, projectID, cacheKey, now)
}

func (t *setTx) QueriesQueuedBefore(ctx context.Context, before time.Time, limit int) ([]Query, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.QueriesQueuedBefore(ctx, before, limit)
}

func (t *setTx) QueriesCreatedBefore(ctx context.Context, statuses []api.QueryStatus, before time.Time, limit int) ([]Query, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.QueriesCreatedBefore(ctx, statuses, before, limit)
}

func (t *setTx) QueueStats(ctx context.Context) (QueueStats, error) {
	if err := t.flush(ctx); err != nil {
		return QueueStats{}, err
	}
	return t.tx.QueueStats(ctx)
}

func (t *setTx) ModelGet(ctx context.Context, projectID int64, name string) (SemanticModel, error) {
	if err := t.flush(ctx); err != nil {
		return SemanticModel{}, err
	}
	return t.tx.ModelGet(ctx, projectID, name)
}

func (t *setTx) ModelList(ctx context.Context, projectID int64) ([]SemanticModel, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.ModelList(ctx, projectID)
}

func (t *setTx) BuildGet(ctx context.Context, uuid string) (BuildRow, error) {
	if err := t.flush(ctx); err != nil {
		return BuildRow{}, err
	}
	return t.tx.BuildGet(ctx, uuid)
}

func (t *setTx) BuildList(ctx context.Context, projectID int64, model, preAgg string, offset, limit int) ([]PreAggBuild, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.BuildList(ctx, projectID, model, preAgg, offset, limit)
}

func (t *setTx) BuildsActive(ctx context.Context, projectID int64) ([]PreAggBuild, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.BuildsActive(ctx, projectID)
}

func (t *setTx) BuildsQueuedBefore(ctx context.Context, before time.Time, limit int) ([]PreAggBuild, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.BuildsQueuedBefore(ctx, before, limit)
}

func (t *setTx) BuildsBuildingBefore(ctx context.Context, before time.Time, limit int) ([]PreAggBuild, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.BuildsBuildingBefore(ctx, before, limit)
}

func (t *setTx) BuildPending(ctx context.Context, projectID int64, model, preAgg string) (bool, error) {
	if err := t.flush(ctx); err != nil {
		return false, err
	}
	return t.tx.BuildPending(ctx, projectID, model, preAgg)
}

func (t *setTx) PreAggStateGet(ctx context.Context, projectID int64, model, preAgg string) (PreAggState, error) {
	if err := t.flush(ctx); err != nil {
		return PreAggState{}, err
	}
	return t.tx.PreAggStateGet(ctx, projectID, model, preAgg)
}

func (t *setTx) AuthTokenByHash(ctx context.Context, hash string) (AuthToken, error) {
	if err := t.flush(ctx); err != nil {
		return AuthToken{}, err
	}
	return t.tx.AuthTokenByHash(ctx, hash)
}

func (t *setTx) AuthTokenGet(ctx context.Context, id int64) (AuthToken, error) {
	if err := t.flush(ctx); err != nil {
		return AuthToken{}, err
	}
	return t.tx.AuthTokenGet(ctx, id)
}

func (t *setTx) AuthTokenList(ctx context.Context, kind string) ([]AuthToken, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.AuthTokenList(ctx, kind)
}

func (t *setTx) CatalogGet(ctx context.Context, path string, version int) (CatalogEntry, error) {
	if err := t.flush(ctx); err != nil {
		return CatalogEntry{}, err
	}
	return t.tx.CatalogGet(ctx, path, version)
}

func (t *setTx) CatalogGetByID(ctx context.Context, catalogID int64) (CatalogEntry, error) {
	if err := t.flush(ctx); err != nil {
		return CatalogEntry{}, err
	}
	return t.tx.CatalogGetByID(ctx, catalogID)
}

func (t *setTx) CatalogList(ctx context.Context) ([]CatalogEntry, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.CatalogList(ctx)
}

func (t *setTx) ExecutionList(ctx context.Context, f ExecutionFilter, offset, limit int) ([]Execution, int64, error) {
	if err := t.flush(ctx); err != nil {
		return nil, 0, err
	}
	return t.tx.ExecutionList(ctx, f, offset, limit)
}

func (t *setTx) EventList(ctx context.Context, executionID int64) ([]Event, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.EventList(ctx, executionID)
}

func (t *setTx) EventListOfType(ctx context.Context, executionID int64, eventType string) ([]Event, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.EventListOfType(ctx, executionID, eventType)
}

func (t *setTx) EventsAfter(ctx context.Context, executionID, afterID int64, types []string, limit int) ([]Event, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.EventsAfter(ctx, executionID, afterID, types, limit)
}

func (t *setTx) CommandListByExecution(ctx context.Context, executionID int64) ([]Command, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.CommandListByExecution(ctx, executionID)
}

func (t *setTx) CommandsDue(ctx context.Context, now, unclaimedBefore time.Time, limit int) ([]Command, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.CommandsDue(ctx, now, unclaimedBefore, limit)
}

func (t *setTx) CommandsToNotify(ctx context.Context, now time.Time, limit int) ([]Notice, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.CommandsToNotify(ctx, now, limit)
}

func (t *setTx) CommandNotified(ctx context.Context, marks []Notified) (int, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.tx.CommandNotified(ctx, marks)
}

func (t *setTx) OutboxFetch(ctx context.Context, now time.Time, limit int) ([]OutboxMsg, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.OutboxFetch(ctx, now, limit)
}

func (t *setTx) Stats(ctx context.Context) (Stats, error) {
	if err := t.flush(ctx); err != nil {
		return Stats{}, err
	}
	return t.tx.Stats(ctx)
}

func (t *setTx) OpsStats(ctx context.Context, now time.Time) (OpsStats, error) {
	if err := t.flush(ctx); err != nil {
		return OpsStats{}, err
	}
	return t.tx.OpsStats(ctx, now)
}

func (t *setTx) DBClock(ctx context.Context) (time.Time, error) {
	if err := t.flush(ctx); err != nil {
		return time.Time{}, err
	}
	return t.tx.DBClock(ctx)
}

func (t *setTx) ExecutionChildren(ctx context.Context, parent int64) ([]Execution, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.ExecutionChildren(ctx, parent)
}

func (t *setTx) LoopGet(ctx context.Context, loopID int64) (Loop, error) {
	if err := t.flush(ctx); err != nil {
		return Loop{}, err
	}
	return t.tx.LoopGet(ctx, loopID)
}

func (t *setTx) LoopListByExecution(ctx context.Context, executionID int64) ([]Loop, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.LoopListByExecution(ctx, executionID)
}

func (t *setTx) CredentialGet(ctx context.Context, name string) (Credential, error) {
	if err := t.flush(ctx); err != nil {
		return Credential{}, err
	}
	return t.tx.CredentialGet(ctx, name)
}

func (t *setTx) CredentialList(ctx context.Context) ([]Credential, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.CredentialList(ctx)
}

func (t *setTx) BlobGet(ctx context.Context, id int64) ([]byte, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.tx.BlobGet(ctx, id)
}

func (t *setTx) ProjectPut(ctx context.Context, p Project) (Project, error) {
	if err := t.flush(ctx); err != nil {
		return Project{}, err
	}
	return t.tx.ProjectPut(ctx, p)
}

func (t *setTx) QueryInsert(ctx context.Context, q Query) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.QueryInsert(ctx, q)
}

func (t *setTx) QueryTransition(ctx context.Context, uuid string, from []api.QueryStatus, to api.QueryStatus, upd QueryUpdate, now time.Time) (Query, error) {
	if err := t.flush(ctx); err != nil {
		return Query{}, err
	}
	return t.tx.QueryTransition(ctx, uuid, from, to, upd, now)
}

func (t *setTx) QueryMarkRepublished(ctx context.Context, uuid string, now time.Time) (Query, error) {
	if err := t.flush(ctx); err != nil {
		return Query{}, err
	}
	return t.tx.QueryMarkRepublished(ctx, uuid, now)
}

func (t *setTx) ModelPut(ctx context.Context, m SemanticModel) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.ModelPut(ctx, m)
}

func (t *setTx) ModelDelete(ctx context.Context, projectID int64, name string) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.ModelDelete(ctx, projectID, name)
}

func (t *setTx) BuildInsert(ctx context.Context, b PreAggBuild) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.BuildInsert(ctx, b)
}

func (t *setTx) BuildTransition(ctx context.Context, uuid string, from []api.BuildStatus, to api.BuildStatus, upd BuildUpdate, now time.Time) (PreAggBuild, error) {
	if err := t.flush(ctx); err != nil {
		return PreAggBuild{}, err
	}
	return t.tx.BuildTransition(ctx, uuid, from, to, upd, now)
}

func (t *setTx) BuildPromote(ctx context.Context, uuid string, upd BuildUpdate, now time.Time) (PreAggBuild, error) {
	if err := t.flush(ctx); err != nil {
		return PreAggBuild{}, err
	}
	return t.tx.BuildPromote(ctx, uuid, upd, now)
}

func (t *setTx) BuildMarkRepublished(ctx context.Context, uuid string, now time.Time) (PreAggBuild, error) {
	if err := t.flush(ctx); err != nil {
		return PreAggBuild{}, err
	}
	return t.tx.BuildMarkRepublished(ctx, uuid, now)
}

func (t *setTx) PreAggStateCAS(ctx context.Context, st PreAggState, prevVersion int64) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.PreAggStateCAS(ctx, st, prevVersion)
}

func (t *setTx) AuthTokenInsert(ctx context.Context, tok AuthToken) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.AuthTokenInsert(ctx, tok)
}

func (t *setTx) AuthTokenRevoke(ctx context.Context, id int64, now time.Time) (bool, error) {
	if err := t.flush(ctx); err != nil {
		return false, err
	}
	return t.tx.AuthTokenRevoke(ctx, id, now)
}

func (t *setTx) AuthTokenTouch(ctx context.Context, id int64, now time.Time) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.AuthTokenTouch(ctx, id, now)
}

func (t *setTx) AuthSessionsPurge(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.tx.AuthSessionsPurge(ctx, before, limit)
}

func (t *setTx) CatalogInsert(ctx context.Context, catalogID int64, path, name, content string, now time.Time) (CatalogEntry, error) {
	if err := t.flush(ctx); err != nil {
		return CatalogEntry{}, err
	}
	return t.tx.CatalogInsert(ctx, catalogID, path, name, content, now)
}

func (t *setTx) ExecutionSetContext(ctx context.Context, id int64, context json.RawMessage) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.ExecutionSetContext(ctx, id, context)
}

func (t *setTx) ExecutionFinish(ctx context.Context, id int64, status api.ExecStatus, result json.RawMessage, errMsg string, now time.Time) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.ExecutionFinish(ctx, id, status, result, errMsg, now)
}

func (t *setTx) CommandCancelExecution(ctx context.Context, executionID int64, now time.Time) (int, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.tx.CommandCancelExecution(ctx, executionID, now)
}

func (t *setTx) OutboxDelete(ctx context.Context, ids []int64) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.OutboxDelete(ctx, ids)
}

func (t *setTx) LoopInsert(ctx context.Context, l Loop) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.LoopInsert(ctx, l)
}

func (t *setTx) LoopFinish(ctx context.Context, loopID int64, status api.LoopStatus, result json.RawMessage, now time.Time) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.LoopFinish(ctx, loopID, status, result, now)
}

func (t *setTx) CredentialPut(ctx context.Context, c Credential) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.CredentialPut(ctx, c)
}

func (t *setTx) CredentialDelete(ctx context.Context, name string) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.CredentialDelete(ctx, name)
}

func (t *setTx) BlobPut(ctx context.Context, id int64, data []byte, now time.Time) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.BlobPut(ctx, id, data, now)
}

// Slice idem (issue 15): idempotency keys. The insert must see every
// pending row of the batch (a key's row decides what the caller's own rows
// mean), so it writes the set first like every other statement.

func (t *setTx) IdempotencyGet(ctx context.Context, scope, key string) (IdempotencyKey, error) {
	if err := t.flush(ctx); err != nil {
		return IdempotencyKey{}, err
	}
	return t.tx.IdempotencyGet(ctx, scope, key)
}

func (t *setTx) IdempotencyInsert(ctx context.Context, k IdempotencyKey, expiredBefore time.Time) (bool, error) {
	if err := t.flush(ctx); err != nil {
		return false, err
	}
	return t.tx.IdempotencyInsert(ctx, k, expiredBefore)
}

func (t *setTx) IdempotencyPurge(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.tx.IdempotencyPurge(ctx, before, limit)
}
