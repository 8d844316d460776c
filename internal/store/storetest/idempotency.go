package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// idemRacers is how many transactions insert one key at once.
const idemRacers = 8

func (b *bundle) idemKey(scope, key, result string, created time.Time) store.IdempotencyKey {
	return store.IdempotencyKey{Scope: scope, Key: key, RequestHash: "hash-of-" + result, ResultID: result,
		Answer: []byte(fmt.Sprintf(`{"id": %q,  "status":"running"}`, result)), CreatedAt: created}
}

func (b *bundle) idemInsert(k store.IdempotencyKey, expiredBefore time.Time) bool {
	b.t.Helper()
	ok, err := txDo(b, func(tx store.Tx) (bool, error) { return tx.IdempotencyInsert(b.ctx(), k, expiredBefore) })
	b.mustNil("IdempotencyInsert "+k.Key, err)
	return ok
}

func (b *bundle) wantIdem(what string, want store.IdempotencyKey) {
	b.t.Helper()
	got, err := readDo(b, func(q store.Querier) (store.IdempotencyKey, error) {
		return q.IdempotencyGet(b.ctx(), want.Scope, want.Key)
	})
	b.mustNil(what, err)
	if got.Scope != want.Scope || got.Key != want.Key || got.RequestHash != want.RequestHash ||
		got.ResultID != want.ResultID || !bytes.Equal(got.Answer, want.Answer) || !got.CreatedAt.Equal(want.CreatedAt) {
		b.fatalf("%s: IdempotencyGet = %+v, want %+v", what, got, want)
	}
}

func idempotencyCases() []testCase {
	return []testCase{
		{"InsertGetAndLiveKeyKept", func(b *bundle) {
			first := b.idemKey(store.IdemExecution, "key-1", "101", b.now)
			if !b.idemInsert(first, b.now.Add(-time.Hour)) {
				b.fatalf("IdempotencyInsert of a new key = false, want true")
			}
			b.wantIdem("after the first insert", first)
			// A live key keeps its first row, whatever the second asks.
			second := b.idemKey(store.IdemExecution, "key-1", "202", b.now.Add(time.Second))
			if b.idemInsert(second, b.now.Add(-time.Hour)) {
				b.fatalf("IdempotencyInsert of a live key = true, want false")
			}
			b.wantIdem("after a second insert of a live key", first)
			// Scopes are apart: the same key of a query is another key.
			q := b.idemKey(store.IdemQuery, "key-1", "uuid-1", b.now)
			if !b.idemInsert(q, b.now.Add(-time.Hour)) {
				b.fatalf("IdempotencyInsert of the same key in another scope = false, want true")
			}
			b.wantIdem("query scope", q)
			b.wantIdem("execution scope unchanged", first)
			_, err := readDo(b, func(q store.Querier) (store.IdempotencyKey, error) {
				return q.IdempotencyGet(b.ctx(), store.IdemExecution, "no-such-key")
			})
			b.wantErr("IdempotencyGet of a missing key", err, store.ErrNotFound)
		}},
		{"ExpiredKeyReplaced", func(b *bundle) {
			old := b.idemKey(store.IdemExecution, "old", "1", b.now.Add(-2*time.Hour))
			b.idemInsert(old, b.now.Add(-3*time.Hour))
			// Expired at the second insert: it is replaced.
			fresh := b.idemKey(store.IdemExecution, "old", "2", b.now)
			if !b.idemInsert(fresh, b.now.Add(-time.Hour)) {
				b.fatalf("IdempotencyInsert over an expired key = false, want true")
			}
			b.wantIdem("expired key replaced", fresh)
		}},
		{"RolledBackInsertLeavesNoKey", func(b *bundle) {
			k := b.idemKey(store.IdemExecution, "rolled-back", "1", b.now)
			boom := errors.New("caller failed")
			err := b.write(func(tx store.Tx) error {
				if _, err := tx.IdempotencyInsert(b.ctx(), k, b.now.Add(-time.Hour)); err != nil {
					return err
				}
				return boom
			})
			b.wantErr("write", err, boom)
			_, err = readDo(b, func(q store.Querier) (store.IdempotencyKey, error) {
				return q.IdempotencyGet(b.ctx(), k.Scope, k.Key)
			})
			b.wantErr("IdempotencyGet after a rollback", err, store.ErrNotFound)
			if !b.idemInsert(k, b.now.Add(-time.Hour)) {
				b.fatalf("IdempotencyInsert after a rolled-back one = false, want true")
			}
		}},
		{"ConcurrentInsertsOneWins", func(b *bundle) {
			var wins atomic.Int32
			var wg sync.WaitGroup
			errs := make(chan error, idemRacers)
			for i := range idemRacers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					k := b.idemKey(store.IdemExecution, "raced", fmt.Sprint(i), b.now)
					ok, err := txDo(b, func(tx store.Tx) (bool, error) {
						return tx.IdempotencyInsert(b.ctx(), k, b.now.Add(-time.Hour))
					})
					if err != nil {
						errs <- err
						return
					}
					if ok {
						wins.Add(1)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.fatalf("IdempotencyInsert racer: %v", err)
			}
			if n := wins.Load(); n != 1 {
				b.fatalf("%d of %d concurrent inserts of one key won, want exactly 1", n, idemRacers)
			}
		}},
		{"Purge", func(b *bundle) {
			for i := range 5 {
				b.idemInsert(b.idemKey(store.IdemExecution, fmt.Sprintf("old-%d", i), "1", b.now.Add(-time.Duration(i+1)*time.Hour)), b.now.Add(-48*time.Hour))
			}
			kept := b.idemKey(store.IdemQuery, "kept", "u", b.now)
			b.idemInsert(kept, b.now.Add(-48*time.Hour))
			for _, want := range []int{2, 2, 1, 0} {
				n, err := txDo(b, func(tx store.Tx) (int, error) { return tx.IdempotencyPurge(b.ctx(), b.now, 2) })
				b.mustNil("IdempotencyPurge", err)
				if n != want {
					b.fatalf("IdempotencyPurge(limit 2) deleted %d, want %d", n, want)
				}
			}
			b.wantIdem("a key newer than the cutoff", kept)
		}},
	}
}
