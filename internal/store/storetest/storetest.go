// Package storetest is the conformance suite every store.Driver must pass.
//
// A driver package calls Run from its own test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Driver { return openFresh(t) })
//	}
//
// Every subtest runs in parallel on its own driver, so open must hand out a
// fresh, migrated, empty database each time and register a t.Cleanup that
// closes it. The suite only speaks the store.Driver interface; what it checks
// is the contract written in internal/store/store.go.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

// Tunables of the suite. They are small so the suite stays fast, but large
// enough that a non-atomic implementation loses the races they provoke.
const (
	// leaseTTL is the lease every test claim asks for.
	leaseTTL = time.Minute
	// claimRacers is how many goroutines race to claim one command.
	claimRacers = 16
	// loopRacers is how many goroutines race to finish one loop.
	loopRacers = 16
	// catalogRacers is how many goroutines insert the same catalog path at
	// once.
	catalogRacers = 8
	// migrateRacers is how many goroutines call Migrate at once.
	migrateRacers = 4
	// blockingTimeout bounds operations that must not block (a Read while a
	// writer is open); hitting it means the driver serialised them.
	blockingTimeout = 10 * time.Second
	// lockHold is how long a test keeps an execution locked before
	// committing, to give a second writer the chance to (wrongly) slip
	// past the lock. Correct drivers pass however short it is.
	lockHold = 100 * time.Millisecond
)

// Sample JSON documents. Their whitespace, key order, escapes and duplicate
// keys would all be rewritten by PostgreSQL jsonb, so byte-for-byte equality
// after a round trip proves the driver stores the text untouched.
var (
	jsonWorkload = json.RawMessage(`{"z": 1,  "a" : [1.50, "caf\u00e9", null], "dup": 1, "dup": 2}`)
	jsonTool     = json.RawMessage(`{ "kind":"shell", "cmd" : "echo  hi" }`)
	jsonInput    = json.RawMessage(`{"b":true,"a":{ "nested" :[ ] }}`)
	jsonResult   = json.RawMessage(`{"out": "ok",   "n": 1e3}`)
	jsonItems    = json.RawMessage(`[ {"host":"a"},  "b", 3.0, null ]`)
	jsonContext  = json.RawMessage(`{"region" : "eu",  "hosts":[ "a","b" ], "n": 2.50}`)
	jsonContext2 = json.RawMessage(`{"region":"us", "region":"ap"}`)
)

// sealed stands in for an encrypted secret or a stored result: every byte
// value, including NUL and invalid UTF-8, must round-trip.
var sealed = func() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(255 - i)
	}
	return b
}()

type testCase struct {
	name string
	fn   func(b *bundle)
}

type testGroup struct {
	name  string
	cases []testCase
}

// Run executes the whole conformance suite against the drivers open returns.
// open is called once per subtest and must return a fresh, migrated, empty
// driver that it closes through t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Driver) {
	groups := []testGroup{
		{"Migrate", migrateCases()},
		{"Catalog", catalogCases()},
		{"Execution", executionCases()},
		{"Event", eventCases()},
		{"Command", commandCases()},
		{"Claim", claimCases()},
		{"Lease", leaseCases()},
		{"Due", dueCases()},
		{"Notify", notifyCases()},
		{"Outbox", outboxCases()},
		{"Stats", statsCases()},
		{"Ops", opsCases()},
		{"Tx", txCases()},
		{"Time", timeCases()},
		{"Loop", loopCases()},
		{"Credential", credentialCases()},
		{"Blob", blobCases()},
		{"Project", projectCases()},
		{"Query", queryCases()},
		{"Model", modelCases()},
		{"Build", buildCases()},
		{"PreAggState", stateCases()},
		{"ClaimToken", claimTokenCases()},
		{"Auth", authCases()},
		{"Set", setCases()},
		{"GroupCommit", groupCommitCases()},
		{"Many", manyCases()},
		{"Child", childCases()},
		{"Idempotency", idempotencyCases()},
		{"Verify", verifyCases()},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.fn(setup(t, open))
				})
			}
		})
	}
}

// bundle is what every subtest gets: its own driver, an id generator and a
// base time (UTC, microsecond precision) that the test's clock is built on.
type bundle struct {
	t   *testing.T
	drv store.Driver
	ids *ids.Generator
	now time.Time
}

func setup(t *testing.T, open func(t *testing.T) store.Driver) *bundle {
	t.Helper()
	drv := open(t)
	if drv == nil {
		t.Fatal("storetest: open returned a nil driver")
	}
	return &bundle{
		t:   t,
		drv: drv,
		ids: ids.New(-1),
		now: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func (b *bundle) ctx() context.Context { return b.t.Context() }

// fatalf fails the test with a message that names the driver under test.
func (b *bundle) fatalf(format string, args ...any) {
	b.t.Helper()
	b.t.Fatalf("[%s driver] "+format, append([]any{b.drv.Name()}, args...)...)
}

func (b *bundle) errorf(format string, args ...any) {
	b.t.Helper()
	b.t.Errorf("[%s driver] "+format, append([]any{b.drv.Name()}, args...)...)
}

// write runs fn in its own transaction and commits it; on error it rolls
// back and returns the error unchanged so callers can errors.Is it.
func (b *bundle) write(fn func(tx store.Tx) error) error {
	tx, err := b.drv.Begin(b.ctx())
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(b.ctx())
		return err
	}
	if err := tx.Commit(b.ctx()); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (b *bundle) mustWrite(what string, fn func(tx store.Tx) error) {
	b.t.Helper()
	if err := b.write(fn); err != nil {
		b.fatalf("%s: %v", what, err)
	}
}

func (b *bundle) mustRead(what string, fn func(q store.Querier) error) {
	b.t.Helper()
	if err := b.drv.Read(b.ctx(), fn); err != nil {
		b.fatalf("%s: %v", what, err)
	}
}

// txDo runs one Tx operation in its own committed transaction.
func txDo[T any](b *bundle, fn func(tx store.Tx) (T, error)) (T, error) {
	var out T
	err := b.write(func(tx store.Tx) error {
		var err error
		out, err = fn(tx)
		return err
	})
	return out, err
}

// readDo runs one read in Driver.Read.
func readDo[T any](b *bundle, fn func(q store.Querier) (T, error)) (T, error) {
	var out T
	err := b.drv.Read(b.ctx(), func(q store.Querier) error {
		var err error
		out, err = fn(q)
		return err
	})
	return out, err
}

// wantErr fails unless err matches target (nil target means success).
func (b *bundle) wantErr(what string, err, target error) {
	b.t.Helper()
	switch {
	case target == nil && err != nil:
		b.fatalf("%s: unexpected error: %v", what, err)
	case target != nil && !errors.Is(err, target):
		b.fatalf("%s: got error %v, want errors.Is(err, %v)", what, err, target)
	}
}

func (b *bundle) mustNil(what string, err error) {
	b.t.Helper()
	b.wantErr(what, err, nil)
}

// --- fixtures ---------------------------------------------------------------

// addCatalog registers one more version of path.
func (b *bundle) addCatalog(path, content string) store.CatalogEntry {
	b.t.Helper()
	e, err := txDo(b, func(tx store.Tx) (store.CatalogEntry, error) {
		return tx.CatalogInsert(b.ctx(), b.ids.Next(), path, "name of "+path, content, b.now)
	})
	b.mustNil("CatalogInsert "+path, err)
	return e
}

// newExecution builds a running execution of a fresh catalog entry; the
// entry is inserted so foreign keys, if any, hold.
func (b *bundle) newExecution() store.Execution {
	b.t.Helper()
	cat := b.addCatalog(fmt.Sprintf("flows/%d", b.ids.Next()), "steps: []")
	return store.Execution{
		ExecutionID: b.ids.Next(),
		CatalogID:   cat.CatalogID,
		Path:        cat.Path,
		Version:     cat.Version,
		Status:      api.ExecRunning,
		Workload:    jsonWorkload,
		StartedAt:   b.now,
	}
}

// addExecution inserts a running execution and returns what was inserted.
func (b *bundle) addExecution() store.Execution {
	b.t.Helper()
	e := b.newExecution()
	b.mustWrite("ExecutionInsert", func(tx store.Tx) error { return tx.ExecutionInsert(b.ctx(), e) })
	return e
}

func (b *bundle) finishExecution(id int64, status api.ExecStatus) {
	b.t.Helper()
	b.mustWrite("ExecutionFinish", func(tx store.Tx) error {
		return tx.ExecutionFinish(b.ctx(), id, status, nil, "", b.now)
	})
}

// newCommand builds an unsaved command of execution execID.
func (b *bundle) newCommand(execID int64, created time.Time) store.Command {
	id := b.ids.Next()
	return store.Command{
		EventID:     id,
		ExecutionID: execID,
		CommandID:   fmt.Sprintf("%d:build:%d", execID, id),
		Step:        "build",
		Tool:        jsonTool,
		Input:       jsonInput,
		CreatedAt:   created,
	}
}

// issued is the state CommandInsert must produce from c: AvailableAt
// defaults to CreatedAt and PublishedAt starts at AvailableAt.
func issued(c store.Command) store.Command {
	c.Status = api.CmdIssued
	c.Attempt = 0
	c.Publishes = 1
	if c.AvailableAt.IsZero() {
		c.AvailableAt = c.CreatedAt
	}
	c.PublishedAt = c.AvailableAt
	return c
}

// addCommand inserts an issued command created at created.
func (b *bundle) addCommand(execID int64, created time.Time) store.Command {
	b.t.Helper()
	c := b.newCommand(execID, created)
	b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
	return b.getCommand(c.EventID)
}

func (b *bundle) getCommand(eventID int64) store.Command {
	b.t.Helper()
	c, err := readDo(b, func(q store.Querier) (store.Command, error) { return q.CommandGet(b.ctx(), eventID) })
	b.mustNil(fmt.Sprintf("CommandGet %d", eventID), err)
	return c
}

func (b *bundle) claim(eventID int64, worker string, now time.Time) (store.Command, error) {
	return txDo(b, func(tx store.Tx) (store.Command, error) {
		return tx.CommandClaim(b.ctx(), store.ClaimParams{EventID: eventID, WorkerID: worker, Now: now, LeaseTTL: leaseTTL})
	})
}

func (b *bundle) mustClaim(eventID int64, worker string, now time.Time) store.Command {
	b.t.Helper()
	c, err := b.claim(eventID, worker, now)
	b.mustNil(fmt.Sprintf("CommandClaim by %s", worker), err)
	return c
}

func (b *bundle) start(eventID int64, worker string, attempt int, now time.Time) (store.Command, error) {
	return txDo(b, func(tx store.Tx) (store.Command, error) {
		return tx.CommandStart(b.ctx(), eventID, worker, attempt, 0, now, leaseTTL)
	})
}

func (b *bundle) heartbeat(eventID int64, worker string, attempt int, now time.Time) (store.Command, error) {
	return txDo(b, func(tx store.Tx) (store.Command, error) {
		return tx.CommandHeartbeat(b.ctx(), eventID, worker, attempt, 0, now, leaseTTL)
	})
}

func (b *bundle) finish(p store.FinishParams) (store.Command, error) {
	return txDo(b, func(tx store.Tx) (store.Command, error) { return tx.CommandFinish(b.ctx(), p) })
}

// completeParams is a successful finish by the holder of c.
func completeParams(c store.Command, now time.Time) store.FinishParams {
	return store.FinishParams{EventID: c.EventID, WorkerID: c.WorkerID, Attempt: c.Attempt, Status: api.CmdCompleted, Result: jsonResult, Now: now}
}

// --- comparisons ------------------------------------------------------------

// diff collects field mismatches so one failure lists all of them.
type diff []string

func (d *diff) eq(field string, got, want any) {
	if got != want {
		*d = append(*d, fmt.Sprintf("%s = %v, want %v", field, got, want))
	}
}

// time requires equality and the UTC location the contract promises.
func (d *diff) time(field string, got, want time.Time) {
	if !got.Equal(want) {
		*d = append(*d, fmt.Sprintf("%s = %s, want %s", field, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano)))
	} else if got.Location() != time.UTC {
		*d = append(*d, fmt.Sprintf("%s location = %q, want UTC", field, got.Location()))
	}
}

func (d *diff) timePtr(field string, got, want *time.Time) {
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		*d = append(*d, fmt.Sprintf("%s = %v, want %v", field, fmtTimePtr(got), fmtTimePtr(want)))
	default:
		d.time(field, *got, *want)
	}
}

func fmtTimePtr(p *time.Time) string {
	if p == nil {
		return "nil"
	}
	return p.Format(time.RFC3339Nano)
}

// json requires a byte-for-byte round trip, and nil for a nil document.
func (d *diff) json(field string, got, want json.RawMessage) {
	if want == nil {
		if got != nil {
			*d = append(*d, fmt.Sprintf("%s = %q, want nil (a nil RawMessage is stored as NULL)", field, got))
		}
		return
	}
	if !bytes.Equal(got, want) {
		*d = append(*d, fmt.Sprintf("%s = %q, want byte-identical %q", field, got, want))
	}
}

func (b *bundle) check(what string, d diff) {
	b.t.Helper()
	if len(d) > 0 {
		b.fatalf("%s:\n\t%s", what, strings.Join(d, "\n\t"))
	}
}

func (b *bundle) wantCatalog(what string, got, want store.CatalogEntry) {
	b.t.Helper()
	var d diff
	d.eq("CatalogID", got.CatalogID, want.CatalogID)
	d.eq("Path", got.Path, want.Path)
	d.eq("Version", got.Version, want.Version)
	d.eq("Name", got.Name, want.Name)
	d.eq("Content", got.Content, want.Content)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	b.check(what, d)
}

func (b *bundle) wantExecution(what string, got, want store.Execution) {
	b.t.Helper()
	var d diff
	d.eq("ExecutionID", got.ExecutionID, want.ExecutionID)
	d.eq("CatalogID", got.CatalogID, want.CatalogID)
	d.eq("Path", got.Path, want.Path)
	d.eq("Version", got.Version, want.Version)
	d.eq("Status", got.Status, want.Status)
	d.json("Workload", got.Workload, want.Workload)
	d.time("StartedAt", got.StartedAt, want.StartedAt)
	d.timePtr("EndedAt", got.EndedAt, want.EndedAt)
	d.json("Result", got.Result, want.Result)
	d.eq("Error", got.Error, want.Error)
	d.eq("ParentExecutionID", got.ParentExecutionID, want.ParentExecutionID)
	d.eq("Depth", got.Depth, want.Depth)
	d.eq("ParentCommandID", got.ParentCommandID, want.ParentCommandID)
	d.eq("ParentTask", got.ParentTask, want.ParentTask)
	d.eq("ParentAttempt", got.ParentAttempt, want.ParentAttempt)
	d.json("Context", got.Context, want.Context)
	b.check(what, d)
}

func (b *bundle) wantEvent(what string, got, want store.Event) {
	b.t.Helper()
	var d diff
	d.eq("EventID", got.EventID, want.EventID)
	d.eq("ExecutionID", got.ExecutionID, want.ExecutionID)
	d.eq("EventType", got.EventType, want.EventType)
	d.eq("Step", got.Step, want.Step)
	d.eq("CommandID", got.CommandID, want.CommandID)
	d.eq("Status", got.Status, want.Status)
	d.json("Result", got.Result, want.Result)
	d.eq("Error", got.Error, want.Error)
	d.eq("WorkerID", got.WorkerID, want.WorkerID)
	d.eq("Attempt", got.Attempt, want.Attempt)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	b.check(what, d)
}

// wantCommand compares every field; UpdatedAt only when want sets it,
// because the contract leaves its value after CommandInsert open.
func (b *bundle) wantCommand(what string, got, want store.Command) {
	b.t.Helper()
	var d diff
	d.eq("EventID", got.EventID, want.EventID)
	d.eq("ExecutionID", got.ExecutionID, want.ExecutionID)
	d.eq("CommandID", got.CommandID, want.CommandID)
	d.eq("Step", got.Step, want.Step)
	d.json("Tool", got.Tool, want.Tool)
	d.json("Input", got.Input, want.Input)
	d.eq("Status", got.Status, want.Status)
	d.eq("Attempt", got.Attempt, want.Attempt)
	d.eq("WorkerID", got.WorkerID, want.WorkerID)
	d.timePtr("LeaseExpires", got.LeaseExpires, want.LeaseExpires)
	d.json("Result", got.Result, want.Result)
	d.eq("Error", got.Error, want.Error)
	d.eq("Publishes", got.Publishes, want.Publishes)
	d.time("PublishedAt", got.PublishedAt, want.PublishedAt)
	d.time("AvailableAt", got.AvailableAt, want.AvailableAt)
	d.eq("LoopID", got.LoopID, want.LoopID)
	d.eq("LoopIndex", got.LoopIndex, want.LoopIndex)
	d.eq("Retry", got.Retry, want.Retry)
	d.eq("ClaimTokenID", got.ClaimTokenID, want.ClaimTokenID)
	d.eq("Pool", got.Pool, want.Pool)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	if !want.UpdatedAt.IsZero() {
		d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	}
	b.check(what, d)
}

func (b *bundle) wantOutbox(what string, got, want store.OutboxMsg) {
	b.t.Helper()
	var d diff
	d.eq("ID", got.ID, want.ID)
	d.eq("EventID", got.EventID, want.EventID)
	d.eq("Subject", got.Subject, want.Subject)
	d.eq("MsgID", got.MsgID, want.MsgID)
	d.eq("TraceParent", got.TraceParent, want.TraceParent)
	if !bytes.Equal(got.Payload, want.Payload) {
		d = append(d, fmt.Sprintf("Payload = %q, want %q", got.Payload, want.Payload))
	}
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	// A zero AvailableAt means CreatedAt.
	avail := want.AvailableAt
	if avail.IsZero() {
		avail = want.CreatedAt
	}
	d.time("AvailableAt", got.AvailableAt, avail)
	b.check(what, d)
}

// wantCommandIDs checks a command list by event id, in order.
func (b *bundle) wantCommandIDs(what string, got []store.Command, want ...int64) {
	b.t.Helper()
	ids := make([]int64, len(got))
	for i, c := range got {
		ids[i] = c.EventID
	}
	b.wantIDs(what, ids, want)
}

func (b *bundle) wantIDs(what string, got, want []int64) {
	b.t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		b.fatalf("%s: ids = %v, want %v", what, got, want)
	}
}

func leaseAt(now time.Time) *time.Time {
	l := now.Add(leaseTTL)
	return &l
}

func ptr[T any](v T) *T { return &v }
