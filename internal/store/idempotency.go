package store

import (
	"context"
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
