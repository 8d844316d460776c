package storetest

import (
	"bytes"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// queryReads returns the query face of q; every driver's readers provide it.
func (b *bundle) queryReads(q store.Querier) store.QueryQuerier {
	b.t.Helper()
	qq, ok := q.(store.QueryQuerier)
	if !ok {
		b.fatalf("%T does not implement store.QueryQuerier", q)
	}
	return qq
}

// queryWrites returns the query face of tx; every driver's Tx provides it.
func (b *bundle) queryWrites(tx store.Tx) store.QueryTx {
	b.t.Helper()
	qt, ok := tx.(store.QueryTx)
	if !ok {
		b.fatalf("%T does not implement store.QueryTx", tx)
	}
	return qt
}

// readQ runs one query-face read in Driver.Read.
func readQ[T any](b *bundle, fn func(q store.QueryQuerier) (T, error)) (T, error) {
	b.t.Helper()
	return readDo(b, func(q store.Querier) (T, error) { return fn(b.queryReads(q)) })
}

// writeQ runs one query-face write in its own committed transaction.
func writeQ[T any](b *bundle, fn func(tx store.QueryTx) (T, error)) (T, error) {
	b.t.Helper()
	return txDo(b, func(tx store.Tx) (T, error) { return fn(b.queryWrites(tx)) })
}

func (b *bundle) newProject(name string) store.Project {
	return store.Project{
		ProjectID:     b.ids.Next(),
		Name:          name,
		WarehouseType: "postgres",
		Warehouse:     sealed,
		CreatedAt:     b.now,
		UpdatedAt:     b.now,
	}
}

func (b *bundle) putProject(p store.Project) (store.Project, error) {
	return writeQ(b, func(tx store.QueryTx) (store.Project, error) { return tx.ProjectPut(b.ctx(), p) })
}

func (b *bundle) mustPutProject(p store.Project) store.Project {
	b.t.Helper()
	got, err := b.putProject(p)
	b.mustNil("ProjectPut "+p.Name, err)
	return got
}

func (b *bundle) getProject(name string) (store.Project, error) {
	return readQ(b, func(q store.QueryQuerier) (store.Project, error) { return q.ProjectGet(b.ctx(), name) })
}

func (b *bundle) getProjectByID(id int64) (store.Project, error) {
	return readQ(b, func(q store.QueryQuerier) (store.Project, error) { return q.ProjectGetByID(b.ctx(), id) })
}

func (b *bundle) listProjects() []store.Project {
	b.t.Helper()
	list, err := readQ(b, func(q store.QueryQuerier) ([]store.Project, error) { return q.ProjectList(b.ctx()) })
	b.mustNil("ProjectList", err)
	return list
}

// wantProject compares every field; Warehouse byte for byte.
func (b *bundle) wantProject(what string, got, want store.Project) {
	b.t.Helper()
	var d diff
	d.eq("ProjectID", got.ProjectID, want.ProjectID)
	d.eq("Name", got.Name, want.Name)
	d.eq("WarehouseType", got.WarehouseType, want.WarehouseType)
	if !bytes.Equal(got.Warehouse, want.Warehouse) {
		d = append(d, fmt.Sprintf("Warehouse = %x, want byte-identical %x", got.Warehouse, want.Warehouse))
	}
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	b.check(what, d)
}

func projectCases() []testCase {
	return []testCase{
		{"PutGetRoundTrip", func(b *bundle) {
			want := b.newProject("analytics")
			got := b.mustPutProject(want)
			b.wantProject("ProjectPut result", got, want)
			byName, err := b.getProject("analytics")
			b.mustNil("ProjectGet", err)
			b.wantProject("ProjectGet", byName, want)
			byID, err := b.getProjectByID(want.ProjectID)
			b.mustNil("ProjectGetByID", err)
			b.wantProject("ProjectGetByID", byID, want)
		}},
		{"PutReplaceKeepsIDAndCreatedAt", func(b *bundle) {
			orig := b.mustPutProject(b.newProject("sales"))
			// A second put of the same name, as `project add` run again
			// with a fresh id and a rotated connection.
			repl := b.newProject("sales")
			repl.WarehouseType = "duckdb"
			repl.Warehouse = []byte("other sealed bytes")
			repl.CreatedAt, repl.UpdatedAt = b.now.Add(time.Hour), b.now.Add(time.Hour)
			got := b.mustPutProject(repl)
			want := repl
			want.ProjectID, want.CreatedAt = orig.ProjectID, orig.CreatedAt
			b.wantProject("ProjectPut result for an existing name", got, want)
			stored, err := b.getProject("sales")
			b.mustNil("ProjectGet", err)
			b.wantProject("project after replace", stored, want)
			_, err = b.getProjectByID(repl.ProjectID)
			b.wantErr("ProjectGetByID of the id the replace did not use", err, store.ErrNotFound)
			if n := len(b.listProjects()); n != 1 {
				b.fatalf("ProjectList after replacing one project = %d entries, want 1", n)
			}
		}},
		{"PutZeroTimesMeansNow", func(b *bundle) {
			p := b.newProject("fresh")
			p.CreatedAt, p.UpdatedAt = time.Time{}, time.Time{}
			before := time.Now().UTC().Truncate(time.Microsecond)
			got := b.mustPutProject(p)
			after := time.Now().UTC()
			for field, at := range map[string]time.Time{"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt} {
				if at.Before(before) || at.After(after) {
					b.fatalf("ProjectPut with zero times stored %s = %s, want the put time (between %s and %s)", field, at, before, after)
				}
			}
			p.CreatedAt, p.UpdatedAt = got.CreatedAt, got.UpdatedAt
			stored, err := b.getProject("fresh")
			b.mustNil("ProjectGet", err)
			b.wantProject("project put with zero times", stored, p)
		}},
		{"PutIDOfAnotherNameIsConflict", func(b *bundle) {
			a := b.mustPutProject(b.newProject("a"))
			other := b.newProject("b")
			other.ProjectID = a.ProjectID
			_, err := b.putProject(other)
			b.wantErr("ProjectPut of a new name with an id already in use", err, store.ErrConflict)
			_, err = b.getProject("b")
			b.wantErr("ProjectGet of the rejected project", err, store.ErrNotFound)
			got, err := b.getProjectByID(a.ProjectID)
			b.mustNil("ProjectGetByID", err)
			b.wantProject("project whose id was reused", got, a)
		}},
		{"PutZeroIDIsError", func(b *bundle) {
			p := b.newProject("no-id")
			p.ProjectID = 0
			if _, err := b.putProject(p); err == nil {
				b.fatalf("ProjectPut with ProjectID 0 succeeded, want an error (ids come from the caller)")
			}
		}},
		{"EmptyWarehouse", func(b *bundle) {
			p := b.newProject("empty")
			p.Warehouse = nil
			b.mustPutProject(p)
			got, err := b.getProject("empty")
			b.mustNil("ProjectGet", err)
			if len(got.Warehouse) != 0 {
				b.fatalf("project put with no warehouse came back with %d bytes", len(got.Warehouse))
			}
		}},
		{"GetMissing", func(b *bundle) {
			_, err := b.getProject("nope")
			b.wantErr("ProjectGet of an unknown name", err, store.ErrNotFound)
			_, err = b.getProjectByID(b.ids.Next())
			b.wantErr("ProjectGetByID of an unknown id", err, store.ErrNotFound)
		}},
		{"ListByNameWithoutWarehouse", func(b *bundle) {
			if list := b.listProjects(); len(list) != 0 {
				b.fatalf("ProjectList on an empty store = %d entries, want none", len(list))
			}
			byName := map[string]store.Project{}
			for i, n := range []string{"beta", "Zeta", "alpha"} {
				p := b.newProject(n)
				p.WarehouseType = fmt.Sprintf("type-%d", i)
				p.UpdatedAt = b.now.Add(time.Duration(i) * time.Second)
				byName[n] = b.mustPutProject(p)
			}
			list := b.listProjects()
			names := make([]string, len(list))
			for i, p := range list {
				names[i] = p.Name
			}
			// Byte order, not a locale's: upper case sorts before lower.
			if fmt.Sprint(names) != fmt.Sprint([]string{"Zeta", "alpha", "beta"}) {
				b.fatalf("ProjectList names = %q, want [Zeta alpha beta] (byte order)", names)
			}
			for _, p := range list {
				if p.Warehouse != nil {
					b.fatalf("ProjectList entry %q carries %d bytes of Warehouse, want nil (listing never returns sealed connections)", p.Name, len(p.Warehouse))
				}
				want := byName[p.Name]
				want.Warehouse = nil
				b.wantProject("ProjectList entry "+p.Name, p, want)
			}
		}},
		{"MicrosecondUTC", func(b *bundle) {
			t1, w1 := ragged(0)
			t2, w2 := ragged(time.Hour)
			p := b.newProject("timed")
			p.CreatedAt, p.UpdatedAt = t1, t2
			got := b.mustPutProject(p)
			stored, err := b.getProject("timed")
			b.mustNil("ProjectGet", err)
			var d diff
			d.time("ProjectPut result CreatedAt", got.CreatedAt, w1)
			d.time("ProjectPut result UpdatedAt", got.UpdatedAt, w2)
			d.time("stored CreatedAt", stored.CreatedAt, w1)
			d.time("stored UpdatedAt", stored.UpdatedAt, w2)
			b.check("project times must come back in UTC, truncated to the microsecond", d)
		}},
	}
}
