package storetest

import (
	"bytes"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

func (b *bundle) putCredential(c store.Credential) {
	b.t.Helper()
	b.mustWrite("CredentialPut "+c.Name, func(tx store.Tx) error { return tx.CredentialPut(b.ctx(), c) })
}

func (b *bundle) getCredential(name string) (store.Credential, error) {
	return readDo(b, func(q store.Querier) (store.Credential, error) { return q.CredentialGet(b.ctx(), name) })
}

func (b *bundle) listCredentials() []store.Credential {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.Credential, error) { return q.CredentialList(b.ctx()) })
	b.mustNil("CredentialList", err)
	return list
}

func (b *bundle) deleteCredential(name string) error {
	return b.write(func(tx store.Tx) error { return tx.CredentialDelete(b.ctx(), name) })
}

// wantCredential compares every field; Data byte for byte.
func (b *bundle) wantCredential(what string, got, want store.Credential) {
	b.t.Helper()
	var d diff
	d.eq("Name", got.Name, want.Name)
	d.eq("Kind", got.Kind, want.Kind)
	d.eq("Description", got.Description, want.Description)
	if !bytes.Equal(got.Data, want.Data) {
		d = append(d, fmt.Sprintf("Data = %x, want byte-identical %x", got.Data, want.Data))
	}
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	b.check(what, d)
}

func (b *bundle) newCredential(name string) store.Credential {
	return store.Credential{
		Name:        name,
		Kind:        "postgres",
		Description: "warehouse (lecture seule) — rotated monthly",
		Data:        sealed,
		CreatedAt:   b.now,
		UpdatedAt:   b.now,
	}
}

func credentialCases() []testCase {
	return []testCase{
		{"PutGetRoundTrip", func(b *bundle) {
			want := b.newCredential("warehouse")
			want.UpdatedAt = b.now.Add(time.Second)
			b.putCredential(want)
			got, err := b.getCredential(want.Name)
			b.mustNil("CredentialGet", err)
			b.wantCredential("CredentialGet after CredentialPut", got, want)
		}},
		{"PutReplaceKeepsCreatedAt", func(b *bundle) {
			orig := b.newCredential("api")
			b.putCredential(orig)
			later := b.now.Add(time.Hour)
			repl := store.Credential{
				Name: "api", Kind: "http", Description: "", Data: []byte{0x01},
				// A replace must keep the stored CreatedAt, not take this one.
				CreatedAt: later.Add(time.Hour), UpdatedAt: later,
			}
			b.putCredential(repl)
			got, err := b.getCredential("api")
			b.mustNil("CredentialGet after replace", err)
			want := repl
			want.CreatedAt = orig.CreatedAt
			b.wantCredential("credential after a second CredentialPut (shorter data, new kind)", got, want)
			if n := len(b.listCredentials()); n != 1 {
				b.fatalf("CredentialList after replacing one credential = %d entries, want 1", n)
			}
		}},
		{"PutZeroTimesMeanNow", func(b *bundle) {
			c := b.newCredential("fresh")
			c.CreatedAt, c.UpdatedAt = time.Time{}, time.Time{}
			before := time.Now().UTC().Truncate(time.Microsecond)
			b.putCredential(c)
			after := time.Now().UTC()
			got, err := b.getCredential("fresh")
			b.mustNil("CredentialGet", err)
			for field, at := range map[string]time.Time{"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt} {
				if at.Before(before) || at.After(after) {
					b.fatalf("CredentialPut with zero times stored %s = %s, want the put time (between %s and %s)", field, at, before, after)
				}
			}
			c.CreatedAt, c.UpdatedAt = got.CreatedAt, got.UpdatedAt
			b.wantCredential("credential put with zero times", got, c)
		}},
		{"GetMissing", func(b *bundle) {
			_, err := b.getCredential("nope")
			b.wantErr("CredentialGet of an unknown name", err, store.ErrNotFound)
		}},
		{"ListByNameWithoutData", func(b *bundle) {
			if list := b.listCredentials(); len(list) != 0 {
				b.fatalf("CredentialList on an empty store = %d entries, want none", len(list))
			}
			// Byte order, not a locale's: upper case sorts before lower.
			names := []string{"beta", "Zeta", "alpha"}
			byName := map[string]store.Credential{}
			for i, n := range names {
				c := b.newCredential(n)
				c.Kind = fmt.Sprintf("kind-%d", i)
				c.UpdatedAt = b.now.Add(time.Duration(i) * time.Second)
				byName[n] = c
				b.putCredential(c)
			}
			list := b.listCredentials()
			got := make([]string, len(list))
			for i, c := range list {
				got[i] = c.Name
			}
			if fmt.Sprint(got) != fmt.Sprint([]string{"Zeta", "alpha", "beta"}) {
				b.fatalf("CredentialList names = %q, want [Zeta alpha beta] (byte order)", got)
			}
			for _, c := range list {
				if c.Data != nil {
					b.fatalf("CredentialList entry %q carries %d bytes of Data, want nil (listing never returns secrets)", c.Name, len(c.Data))
				}
				want := byName[c.Name]
				want.Data = nil
				b.wantCredential("CredentialList entry "+c.Name, c, want)
			}
		}},
		{"Delete", func(b *bundle) {
			b.putCredential(b.newCredential("gone"))
			keep := b.newCredential("kept")
			b.putCredential(keep)
			b.mustNil("CredentialDelete", b.deleteCredential("gone"))
			_, err := b.getCredential("gone")
			b.wantErr("CredentialGet after CredentialDelete", err, store.ErrNotFound)
			b.wantErr("second CredentialDelete", b.deleteCredential("gone"), store.ErrNotFound)
			b.wantErr("CredentialDelete of a name never stored", b.deleteCredential("never"), store.ErrNotFound)
			got, err := b.getCredential("kept")
			b.mustNil("CredentialGet of the other credential", err)
			b.wantCredential("credential next to a deleted one", got, keep)
			// The name is free again, with a new CreatedAt.
			again := b.newCredential("gone")
			again.CreatedAt, again.UpdatedAt = b.now.Add(time.Hour), b.now.Add(time.Hour)
			b.putCredential(again)
			got, err = b.getCredential("gone")
			b.mustNil("CredentialGet after re-creating a deleted name", err)
			b.wantCredential("re-created credential", got, again)
		}},
	}
}

func (b *bundle) putBlob(id int64, data []byte) error {
	return b.write(func(tx store.Tx) error { return tx.BlobPut(b.ctx(), id, data, b.now) })
}

func (b *bundle) wantBlob(what string, id int64, want []byte) {
	b.t.Helper()
	got, err := readDo(b, func(q store.Querier) ([]byte, error) { return q.BlobGet(b.ctx(), id) })
	b.mustNil(what, err)
	if !bytes.Equal(got, want) {
		b.fatalf("%s: %d bytes, want %d byte-identical bytes", what, len(got), len(want))
	}
}

// bigBlobSize is large enough to cross any page or packet boundary.
const bigBlobSize = 1 << 20

func blobCases() []testCase {
	return []testCase{
		{"PutGetRoundTrip", func(b *bundle) {
			big := make([]byte, bigBlobSize)
			for i := range big {
				big[i] = byte(i * 7 % 251)
			}
			for name, data := range map[string][]byte{"binary": sealed, "1 MiB": big, "empty": {}, "nil": nil} {
				id := b.ids.Next()
				b.mustNil("BlobPut "+name, b.putBlob(id, data))
				b.wantBlob("BlobGet "+name, id, data)
			}
		}},
		{"GetMissing", func(b *bundle) {
			_, err := readDo(b, func(q store.Querier) ([]byte, error) { return q.BlobGet(b.ctx(), b.ids.Next()) })
			b.wantErr("BlobGet of an unknown id", err, store.ErrNotFound)
		}},
		{"DuplicateIsConflict", func(b *bundle) {
			id := b.ids.Next()
			b.mustNil("BlobPut", b.putBlob(id, sealed))
			b.wantErr("BlobPut of an existing id", b.putBlob(id, []byte("other")), store.ErrConflict)
			b.wantBlob("BlobGet after the rejected duplicate", id, sealed)
		}},
	}
}
