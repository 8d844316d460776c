package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Idempotency scopes: what a key's submit made.
const (
	IdemExecution = "execution"
	IdemQuery     = "query"
)

// ErrIdempotencyReused: the Idempotency-Key was first used with another
// request (its RequestHash differs). Nothing was made.
var ErrIdempotencyReused = errors.New("idempotency key reused for another request")

// IdempotencyKey records one submit made with an Idempotency-Key, in the
// transaction that made its execution or query; (Scope, Key) is unique.
type IdempotencyKey struct {
	Scope       string // IdemExecution | IdemQuery
	Key         string
	RequestHash string // what was asked: a retry must ask the same
	ResultID    string // the execution id or query uuid made
	Answer      []byte // the first answer's JSON body, sent again on a replay
	CreatedAt   time.Time
}

// IdempotencyQuerier reads recorded keys.
type IdempotencyQuerier interface {
	// IdempotencyGet reads the key of scope, expired or not (the caller
	// decides); ErrNotFound if none.
	IdempotencyGet(ctx context.Context, scope, key string) (IdempotencyKey, error)
}

// IdempotencyTx records and expires keys (slice idem, issue 15).
type IdempotencyTx interface {
	// IdempotencyInsert records k unless its (Scope, Key) is already
	// recorded with a CreatedAt at or after expiredBefore: a row older
	// than that is replaced. It returns false, changing nothing, when a
	// live row holds the key. Concurrent inserts of one key: exactly one
	// returns true (on PostgreSQL the others wait for its transaction).
	IdempotencyInsert(ctx context.Context, k IdempotencyKey, expiredBefore time.Time) (bool, error)
	// IdempotencyPurge deletes up to limit keys created before before and
	// returns how many it deleted.
	IdempotencyPurge(ctx context.Context, before time.Time, limit int) (int, error)
}

// ErrIdempotencyTaken: inside a transaction, the submit's key is already
// recorded by a live row, so its work must be undone. The caller reads the
// row (IdempotencyGet) after the transaction: the same request gets the
// first answer again, another gets ErrIdempotencyReused.
var ErrIdempotencyTaken = errors.New("idempotency key already recorded")

// IdemRequest is a submit's Idempotency-Key as the server read it. It
// travels in the request context (WithIdempotency) so that flow and query
// record it in the transaction that makes the execution or query without
// a parameter on every entry point.
type IdemRequest struct {
	Scope string
	Key   string
	Hash  string        // hex SHA-256 of what was asked
	TTL   time.Duration // MILLRACE_IDEMPOTENCY_SECONDS: an older row is expired
}

type idemCtxKey struct{}

// WithIdempotency returns ctx carrying r.
func WithIdempotency(ctx context.Context, r *IdemRequest) context.Context {
	return context.WithValue(ctx, idemCtxKey{}, r)
}

// IdempotencyFrom is the IdemRequest of ctx, nil when the submit has no
// key. Read it before Store.Do: the function Do runs gets the batch's
// context, not the caller's.
func IdempotencyFrom(ctx context.Context) *IdemRequest {
	r, _ := ctx.Value(idemCtxKey{}).(*IdemRequest)
	return r
}

// Record inserts the key for resultID with answer (the JSON body the
// caller will send) in tx; ErrIdempotencyTaken when a live row holds it.
// A nil r records nothing.
func (r *IdemRequest) Record(ctx context.Context, tx Tx, resultID string, answer any, now time.Time) error {
	if r == nil {
		return nil
	}
	body, err := json.Marshal(answer)
	if err != nil {
		return err
	}
	ok, err := tx.IdempotencyInsert(ctx, IdempotencyKey{Scope: r.Scope, Key: r.Key, RequestHash: r.Hash,
		ResultID: resultID, Answer: body, CreatedAt: now}, now.Add(-r.TTL))
	if err != nil {
		return err
	}
	if !ok {
		return ErrIdempotencyTaken
	}
	return nil
}
