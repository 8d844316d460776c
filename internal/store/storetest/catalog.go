package storetest

import (
	"fmt"
	"sort"
	"sync"

	"github.com/millrace/millrace/internal/store"
)

func migrateCases() []testCase {
	return []testCase{
		{"Idempotent", func(b *bundle) {
			v1, err := b.drv.MigrationVersion(b.ctx())
			b.mustNil("MigrationVersion", err)
			if v1 < 1 {
				b.fatalf("MigrationVersion after Migrate = %d, want >= 1", v1)
			}
			// What a migrated database reports is what the binary needs:
			// servers with MILLRACE_MIGRATE=false compare the two.
			latest, err := b.drv.LatestMigration()
			b.mustNil("LatestMigration", err)
			if latest != v1 {
				b.fatalf("LatestMigration = %d, MigrationVersion after Migrate = %d; want them equal", latest, v1)
			}
			for i := range 2 {
				b.mustNil(fmt.Sprintf("Migrate again (#%d)", i+1), b.drv.Migrate(b.ctx()))
			}
			v2, err := b.drv.MigrationVersion(b.ctx())
			b.mustNil("MigrationVersion", err)
			if v2 != v1 {
				b.fatalf("MigrationVersion changed from %d to %d by re-running Migrate", v1, v2)
			}
			// The schema is still usable after re-running migrations.
			b.addExecution()
		}},
		{"Concurrent", func(b *bundle) {
			errs := make([]error, migrateRacers)
			var wg sync.WaitGroup
			for i := range migrateRacers {
				wg.Go(func() { errs[i] = b.drv.Migrate(b.ctx()) })
			}
			wg.Wait()
			for i, err := range errs {
				b.mustNil(fmt.Sprintf("concurrent Migrate #%d", i), err)
			}
			v, err := b.drv.MigrationVersion(b.ctx())
			b.mustNil("MigrationVersion", err)
			if v < 1 {
				b.fatalf("MigrationVersion = %d, want >= 1", v)
			}
		}},
	}
}

func catalogCases() []testCase {
	return []testCase{
		{"InsertVersionsPerPath", func(b *bundle) {
			for want := 1; want <= 3; want++ {
				id := b.ids.Next()
				content := fmt.Sprintf("version %d", want)
				e, err := txDo(b, func(tx store.Tx) (store.CatalogEntry, error) {
					return tx.CatalogInsert(b.ctx(), id, "deploy/web", "web", content, b.now)
				})
				b.mustNil("CatalogInsert", err)
				b.wantCatalog("CatalogInsert result", e, store.CatalogEntry{
					CatalogID: id, Path: "deploy/web", Version: want, Name: "web", Content: content, CreatedAt: b.now,
				})
			}
			// Another path starts its own sequence.
			if e := b.addCatalog("deploy/db", "x"); e.Version != 1 {
				b.fatalf("first version of a new path = %d, want 1", e.Version)
			}
		}},
		{"ConcurrentInsertsOfOnePath", func(b *bundle) {
			versions := make([]int, catalogRacers)
			errs := make([]error, catalogRacers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range catalogRacers {
				id := b.ids.Next()
				wg.Go(func() {
					<-start
					e, err := txDo(b, func(tx store.Tx) (store.CatalogEntry, error) {
						return tx.CatalogInsert(b.ctx(), id, "race/path", "race", fmt.Sprint(i), b.now)
					})
					versions[i], errs[i] = e.Version, err
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				b.mustNil(fmt.Sprintf("concurrent CatalogInsert #%d (each in its own transaction)", i), err)
			}
			sort.Ints(versions)
			for i, v := range versions {
				if v != i+1 {
					b.fatalf("concurrent inserts got versions %v, want 1..%d each once", versions, catalogRacers)
				}
			}
			latest, err := readDo(b, func(q store.Querier) (store.CatalogEntry, error) {
				return q.CatalogGet(b.ctx(), "race/path", 0)
			})
			b.mustNil("CatalogGet latest", err)
			if latest.Version != catalogRacers {
				b.fatalf("latest version = %d, want %d", latest.Version, catalogRacers)
			}
		}},
		{"Get", func(b *bundle) {
			v1 := b.addCatalog("ops/backup", "one")
			v2 := b.addCatalog("ops/backup", "two")
			v3 := b.addCatalog("ops/backup", "three")
			b.mustRead("CatalogGet", func(q store.Querier) error {
				got, err := q.CatalogGet(b.ctx(), "ops/backup", 0)
				b.mustNil("CatalogGet version 0", err)
				b.wantCatalog("CatalogGet version 0 (latest)", got, v3)
				got, err = q.CatalogGet(b.ctx(), "ops/backup", 2)
				b.mustNil("CatalogGet version 2", err)
				b.wantCatalog("CatalogGet version 2", got, v2)
				got, err = q.CatalogGetByID(b.ctx(), v1.CatalogID)
				b.mustNil("CatalogGetByID", err)
				b.wantCatalog("CatalogGetByID", got, v1)
				return nil
			})
		}},
		{"GetMissing", func(b *bundle) {
			b.addCatalog("ops/backup", "one")
			b.mustRead("missing lookups", func(q store.Querier) error {
				_, err := q.CatalogGet(b.ctx(), "ops/backup", 2)
				b.wantErr("CatalogGet of a version that does not exist", err, store.ErrNotFound)
				_, err = q.CatalogGet(b.ctx(), "ops/nothing", 0)
				b.wantErr("CatalogGet latest of an unknown path", err, store.ErrNotFound)
				_, err = q.CatalogGetByID(b.ctx(), b.ids.Next())
				b.wantErr("CatalogGetByID of an unknown id", err, store.ErrNotFound)
				return nil
			})
		}},
		{"ListLatestPerPathWithoutContent", func(b *bundle) {
			b.addCatalog("b/second", "b1")
			b.addCatalog("a/first", "a1")
			b2 := b.addCatalog("b/second", "b2")
			b.addCatalog("a/first", "a2")
			a3 := b.addCatalog("a/first", "a3")
			c1 := b.addCatalog("c/third", "c1")
			list, err := readDo(b, func(q store.Querier) ([]store.CatalogEntry, error) { return q.CatalogList(b.ctx()) })
			b.mustNil("CatalogList", err)
			want := []store.CatalogEntry{a3, b2, c1}
			if len(list) != len(want) {
				b.fatalf("CatalogList returned %d entries %+v, want latest of 3 paths", len(list), list)
			}
			for i, w := range want {
				w.Content = ""
				b.wantCatalog(fmt.Sprintf("CatalogList[%d] (latest version, path order, no content)", i), list[i], w)
			}
		}},
		{"ListEmpty", func(b *bundle) {
			list, err := readDo(b, func(q store.Querier) ([]store.CatalogEntry, error) { return q.CatalogList(b.ctx()) })
			b.mustNil("CatalogList", err)
			if len(list) != 0 {
				b.fatalf("CatalogList on an empty store = %+v, want none", list)
			}
		}},
	}
}
