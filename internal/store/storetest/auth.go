package storetest

import (
	"fmt"
	"slices"
	"time"

	"github.com/millrace/millrace/internal/store"
)

func authCases() []testCase {
	return []testCase{
		{"SessionsPurge", func(b *bundle) {
			before := b.now
			ptr := func(t time.Time) *time.Time { return &t }
			old, recent := ptr(before.Add(-time.Hour)), ptr(before.Add(time.Hour))
			type row struct {
				name             string
				kind             string
				expires, revoked *time.Time
				purged           bool
			}
			rows := []row{
				{"expired session", store.TokenSession, old, nil, true},
				{"revoked session", store.TokenSession, recent, old, true},
				{"revoked, no expiry", store.TokenSession, nil, old, true},
				{"live session", store.TokenSession, recent, nil, false},
				{"session without expiry", store.TokenSession, nil, nil, false},
				{"revoked later", store.TokenSession, recent, recent, false},
				{"expired at before", store.TokenSession, ptr(before), nil, false},
				{"expired API token", store.TokenAPI, old, nil, false},
				{"revoked API token", store.TokenAPI, nil, old, false},
			}
			var kept []int64
			var purged int
			for i, r := range rows {
				id := b.ids.Next()
				b.mustWrite("AuthTokenInsert "+r.name, func(tx store.Tx) error {
					return tx.AuthTokenInsert(b.ctx(), store.AuthToken{
						ID: id, Kind: r.kind, Name: r.name, Role: "viewer", Subject: "sub",
						Hash: fmt.Sprintf("hash-%d", i), CreatedAt: before.Add(-2 * time.Hour),
						ExpiresAt: r.expires, RevokedAt: r.revoked,
					})
				})
				if r.purged {
					purged++
				} else {
					kept = append(kept, id)
				}
			}
			// In batches: a limit of 2 deletes 2, then the last one, then none.
			for _, want := range []int{2, purged - 2, 0} {
				var n int
				b.mustWrite("AuthSessionsPurge", func(tx store.Tx) error {
					var err error
					n, err = tx.AuthSessionsPurge(b.ctx(), before, 2)
					return err
				})
				if n != want {
					b.fatalf("AuthSessionsPurge(limit 2) deleted %d, want %d", n, want)
				}
			}
			var left []int64
			for _, kind := range []string{store.TokenSession, store.TokenAPI} {
				list, err := readDo(b, func(q store.Querier) ([]store.AuthToken, error) { return q.AuthTokenList(b.ctx(), kind) })
				b.mustNil("AuthTokenList", err)
				for _, t := range list {
					left = append(left, t.ID)
				}
			}
			slices.Sort(left)
			slices.Sort(kept)
			if !slices.Equal(left, kept) {
				b.fatalf("after AuthSessionsPurge the tokens left are %v, want %v", left, kept)
			}
		}},
	}
}
