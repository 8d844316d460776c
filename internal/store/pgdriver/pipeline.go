package pgdriver

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipe is one transaction on one pooled connection that pays a network round
// trip per statement that needs an answer, not per statement.
//
// Statements whose only answer is "it worked" (BEGIN, SAVEPOINT, the event,
// command and outbox INSERTs) are queued and go out in one write together
// with the next statement that needs an answer: a read, RELEASE SAVEPOINT
// (which the group commit sends after each caller's work) or COMMIT. An
// error of a queued statement is reported by that next statement, wrapped
// the way the queued statement would have wrapped it, so a caller still
// learns of its own failed insert before its savepoint is released. The
// server skips everything after the first error up to the batch's end, as it
// would for statements sent one by one inside a transaction block.
//
// Measured on issue 5's bench (docs/benchmarks.md): the completion of a
// single-step execution went from 11 round trips to 7.
type pipe struct {
	conn   *pgxpool.Conn
	queue  []queued
	begun  bool // BEGIN has been sent
	closed bool // committed, rolled back or released
}

type queued struct {
	sql  string
	args []any
	// wrap turns the server's error into the error the statement's method
	// would have returned; nil means fmt.Errorf("pgdriver: %s: %w", sql, err).
	wrap func(error) error
}

var errPipeClosed = errors.New("pgdriver: transaction already committed or rolled back")

func beginPipe(ctx context.Context, pool *pgxpool.Pool) (*pipe, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	p := &pipe{conn: conn}
	p.enqueue(nil, "BEGIN")
	return p, nil
}

// enqueue queues a statement without an answer.
func (p *pipe) enqueue(wrap func(error) error, sql string, args ...any) {
	p.queue = append(p.queue, queued{sql: sql, args: args, wrap: wrap})
}

// send starts a batch of the queue plus extra (which may be nil) and reads
// the queued statements' results. It returns the open batch, whose next
// result is extra's, and the first queued statement's error. The caller
// must close br.
func (p *pipe) send(ctx context.Context, extra *queued) (br pgx.BatchResults, err error) {
	b := &pgx.Batch{}
	for _, q := range p.queue {
		b.Queue(q.sql, q.args...)
	}
	if extra != nil {
		b.Queue(extra.sql, extra.args...)
	}
	if len(p.queue) > 0 {
		p.begun = true // BEGIN is always first in the first batch
	}
	sent := p.queue
	p.queue = p.queue[:0]
	br = p.conn.SendBatch(ctx, b)
	for _, q := range sent {
		if _, qerr := br.Exec(); qerr != nil && err == nil {
			if q.wrap != nil {
				err = q.wrap(qerr)
			} else {
				err = fmt.Errorf("pgdriver: %s: %w", q.sql, qerr)
			}
		}
	}
	return br, err
}

// flush sends the queue on its own.
func (p *pipe) flush(ctx context.Context) error {
	if len(p.queue) == 0 {
		return nil
	}
	br, err := p.send(ctx, nil)
	return errors.Join(err, br.Close())
}

func (p *pipe) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if p.closed {
		return pgconn.CommandTag{}, errPipeClosed
	}
	if len(p.queue) == 0 {
		return p.conn.Exec(ctx, sql, args...)
	}
	br, err := p.send(ctx, &queued{sql: sql, args: args})
	if err != nil {
		_ = br.Close()
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	return tag, errors.Join(err, br.Close())
}

func (p *pipe) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if p.closed {
		return nil, errPipeClosed
	}
	// Rows stay open while the caller iterates, so the queue goes first.
	if err := p.flush(ctx); err != nil {
		return nil, err
	}
	return p.conn.Query(ctx, sql, args...)
}

func (p *pipe) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if p.closed {
		return errRow{errPipeClosed}
	}
	if len(p.queue) == 0 {
		return p.conn.QueryRow(ctx, sql, args...)
	}
	br, err := p.send(ctx, &queued{sql: sql, args: args})
	if err != nil {
		_ = br.Close()
		return errRow{err}
	}
	return batchRow{row: br.QueryRow(), br: br}
}

// Commit sends the queue with COMMIT and returns the connection.
func (p *pipe) Commit(ctx context.Context) error {
	if p.closed {
		return errPipeClosed
	}
	defer p.release()
	if !p.begun && len(p.queue) == 1 {
		return nil // nothing but BEGIN: nothing to commit
	}
	br, err := p.send(ctx, &queued{sql: "COMMIT"})
	tag, cerr := br.Exec()
	err = errors.Join(err, cerr, br.Close())
	if err != nil {
		return err
	}
	// COMMIT of a transaction the server already aborted answers ROLLBACK.
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback ends the transaction and returns the connection; it is harmless
// after Commit or a previous Rollback.
func (p *pipe) Rollback(ctx context.Context) error {
	if p.closed {
		return pgx.ErrTxClosed
	}
	defer p.release()
	p.queue = nil
	if !p.begun {
		return nil
	}
	_, err := p.conn.Exec(ctx, "ROLLBACK")
	return err
}

// release hands the connection back. The pool closes a connection that is
// still inside a transaction (a failed COMMIT or ROLLBACK) instead of
// reusing it.
func (p *pipe) release() {
	p.closed = true
	p.conn.Release()
}

// batchRow scans the last result of a batch and then closes the batch.
type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
