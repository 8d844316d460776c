package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// Tunables of the pre-aggregate cases.
const (
	// buildRacers is how many goroutines race to claim one build, or to
	// write one refresh state.
	buildRacers = 16
	// promoteRacers is how many builds of one pre-aggregate finish at once.
	promoteRacers = 8
	// promoteRounds is how many times they race.
	promoteRounds = 4
)

// Sample documents of the metrics layer, jsonb-hostile like the others.
var (
	jsonModel      = json.RawMessage(`{"name":"orders",  "table":"public.orders", "dimensions":[{"name":"caf\u00e9"}], "x":1, "x":2}`)
	jsonModel2     = json.RawMessage(`{ "name" : "orders", "sql":"select 1" }`)
	jsonPartitions = json.RawMessage(`[ {"key":"2024-05-01", "object":"p/m/d/b/2024-05-01.parquet","rows":10,"bytes":1.0e3} ]`)
	jsonPartition2 = json.RawMessage(`[{"key":"","object" : "p/m/d/b2/all.parquet"}]`)
	jsonRebuild    = json.RawMessage(`[ "2024-05-01" ,"2024-06-01"]`)
)

// --- fixtures ---------------------------------------------------------------

func (b *bundle) newModel(projectID int64, name string) store.SemanticModel {
	return store.SemanticModel{
		ProjectID: projectID, Name: name, Definition: jsonModel, Hash: "sha256:" + name,
		Source: "projects.yaml:12", UpdatedAt: b.now,
	}
}

func (b *bundle) putModel(m store.SemanticModel) {
	b.t.Helper()
	b.mustWrite("ModelPut "+m.Name, func(tx store.Tx) error { return tx.ModelPut(b.ctx(), m) })
}

func (b *bundle) getModel(projectID int64, name string) (store.SemanticModel, error) {
	return readDo(b, func(q store.Querier) (store.SemanticModel, error) { return q.ModelGet(b.ctx(), projectID, name) })
}

func (b *bundle) listModels(projectID int64) []store.SemanticModel {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.SemanticModel, error) { return q.ModelList(b.ctx(), projectID) })
	b.mustNil("ModelList", err)
	return list
}

func (b *bundle) wantModel(what string, got, want store.SemanticModel) {
	b.t.Helper()
	var d diff
	d.eq("ProjectID", got.ProjectID, want.ProjectID)
	d.eq("Name", got.Name, want.Name)
	d.json("Definition", got.Definition, want.Definition)
	d.eq("Hash", got.Hash, want.Hash)
	d.eq("Source", got.Source, want.Source)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	b.check(what, d)
}

// newBuild builds an unsaved queued build of project/model/preAgg created
// at created. Its uuid sorts by creation, like the UUIDv7s the server hands
// out.
func (b *bundle) newBuild(projectID int64, model, preAgg string, created time.Time) store.PreAggBuild {
	return store.PreAggBuild{
		BuildUUID:    fmt.Sprintf("0190%016x", b.ids.Next()),
		ProjectID:    projectID,
		Model:        model,
		PreAggregate: preAgg,
		DefHash:      "sha256:def",
		Status:       api.BuildQueued,
		Trigger:      "manual",
		CreatedAt:    created,
		UpdatedAt:    created,
	}
}

func (b *bundle) insertBuild(bd store.PreAggBuild) error {
	return b.write(func(tx store.Tx) error { return tx.BuildInsert(b.ctx(), bd) })
}

// addBuild inserts bd and returns it as read back.
func (b *bundle) addBuild(bd store.PreAggBuild) store.PreAggBuild {
	b.t.Helper()
	b.mustNil("BuildInsert "+bd.BuildUUID, b.insertBuild(bd))
	return b.getBuild(bd.BuildUUID)
}

// addBuilding inserts a build already claimed by a worker.
func (b *bundle) addBuilding(projectID int64, model, preAgg string, created time.Time) store.PreAggBuild {
	b.t.Helper()
	bd := b.newBuild(projectID, model, preAgg, created)
	bd.Status, bd.WorkerID, bd.StartedAt, bd.PublishedAt = api.BuildBuilding, "worker-1", ptr(created), ptr(created)
	return b.addBuild(bd)
}

func (b *bundle) getBuild(uuid string) store.PreAggBuild {
	b.t.Helper()
	got, err := readDo(b, func(q store.Querier) (store.PreAggBuild, error) { return q.BuildGet(b.ctx(), uuid) })
	b.mustNil("BuildGet "+uuid, err)
	return got
}

func (b *bundle) buildTransition(uuid string, from []api.BuildStatus, to api.BuildStatus, upd store.BuildUpdate, now time.Time) (store.PreAggBuild, error) {
	return txDo(b, func(tx store.Tx) (store.PreAggBuild, error) {
		return tx.BuildTransition(b.ctx(), uuid, from, to, upd, now)
	})
}

// promote commits BuildPromote even when it reports ErrConflict: a late
// build's superseded state is an outcome to keep, not a failure.
func (b *bundle) promote(uuid string, upd store.BuildUpdate, now time.Time) (store.PreAggBuild, error) {
	var got store.PreAggBuild
	var perr error
	err := b.write(func(tx store.Tx) error {
		got, perr = tx.BuildPromote(b.ctx(), uuid, upd, now)
		if perr != nil && !errors.Is(perr, store.ErrConflict) {
			return perr
		}
		return nil
	})
	if err != nil {
		return got, err
	}
	return got, perr
}

func (b *bundle) activeBuilds(projectID int64) []store.PreAggBuild {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.PreAggBuild, error) { return q.BuildsActive(b.ctx(), projectID) })
	b.mustNil("BuildsActive", err)
	return list
}

func (b *bundle) listBuilds(projectID int64, model, preAgg string, offset, limit int) []store.PreAggBuild {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildList(b.ctx(), projectID, model, preAgg, offset, limit)
	})
	b.mustNil("BuildList", err)
	return list
}

func (b *bundle) buildsQueuedBefore(before time.Time, limit int) []store.PreAggBuild {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildsQueuedBefore(b.ctx(), before, limit)
	})
	b.mustNil("BuildsQueuedBefore", err)
	return list
}

func (b *bundle) buildsBuildingBefore(before time.Time, limit int) []store.PreAggBuild {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildsBuildingBefore(b.ctx(), before, limit)
	})
	b.mustNil("BuildsBuildingBefore", err)
	return list
}

func (b *bundle) buildPending(projectID int64, model, preAgg string) bool {
	b.t.Helper()
	p, err := readDo(b, func(q store.Querier) (bool, error) { return q.BuildPending(b.ctx(), projectID, model, preAgg) })
	b.mustNil("BuildPending", err)
	return p
}

// wantBuild compares every field; the JSON documents byte for byte.
func (b *bundle) wantBuild(what string, got, want store.PreAggBuild) {
	b.t.Helper()
	var d diff
	d.eq("BuildUUID", got.BuildUUID, want.BuildUUID)
	d.eq("ProjectID", got.ProjectID, want.ProjectID)
	d.eq("Model", got.Model, want.Model)
	d.eq("PreAggregate", got.PreAggregate, want.PreAggregate)
	d.eq("DefHash", got.DefHash, want.DefHash)
	d.eq("Status", got.Status, want.Status)
	d.eq("Trigger", got.Trigger, want.Trigger)
	d.json("Partitions", got.Partitions, want.Partitions)
	d.json("Rebuild", got.Rebuild, want.Rebuild)
	d.eq("Rows", got.Rows, want.Rows)
	d.eq("Bytes", got.Bytes, want.Bytes)
	d.eq("KeyValue", got.KeyValue, want.KeyValue)
	d.timePtr("DataAsOf", got.DataAsOf, want.DataAsOf)
	d.eq("Error", got.Error, want.Error)
	d.eq("WorkerID", got.WorkerID, want.WorkerID)
	d.eq("ClaimTokenID", got.ClaimTokenID, want.ClaimTokenID)
	d.eq("Publishes", got.Publishes, want.Publishes)
	d.timePtr("PublishedAt", got.PublishedAt, want.PublishedAt)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.timePtr("StartedAt", got.StartedAt, want.StartedAt)
	d.timePtr("EndedAt", got.EndedAt, want.EndedAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	b.check(what, d)
}

func (b *bundle) wantBuildUUIDs(what string, got []store.PreAggBuild, want ...string) {
	b.t.Helper()
	uuids := make([]string, len(got))
	for i, bd := range got {
		uuids[i] = bd.BuildUUID
	}
	if fmt.Sprint(uuids) != fmt.Sprint(want) {
		b.fatalf("%s: uuids = %v, want %v", what, uuids, want)
	}
}

func buildUUIDs(bs ...store.PreAggBuild) []string {
	out := make([]string, len(bs))
	for i, bd := range bs {
		out[i] = bd.BuildUUID
	}
	return out
}

func (b *bundle) getState(projectID int64, model, preAgg string) (store.PreAggState, error) {
	return readDo(b, func(q store.Querier) (store.PreAggState, error) {
		return q.PreAggStateGet(b.ctx(), projectID, model, preAgg)
	})
}

func (b *bundle) cas(st store.PreAggState, prev int64) error {
	return b.write(func(tx store.Tx) error { return tx.PreAggStateCAS(b.ctx(), st, prev) })
}

func (b *bundle) wantState(what string, got, want store.PreAggState) {
	b.t.Helper()
	var d diff
	d.eq("ProjectID", got.ProjectID, want.ProjectID)
	d.eq("Model", got.Model, want.Model)
	d.eq("PreAggregate", got.PreAggregate, want.PreAggregate)
	d.eq("Version", got.Version, want.Version)
	d.timePtr("NextCronAt", got.NextCronAt, want.NextCronAt)
	d.eq("KeyValue", got.KeyValue, want.KeyValue)
	d.timePtr("KeyCheckedAt", got.KeyCheckedAt, want.KeyCheckedAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	b.check(what, d)
}

// --- models -----------------------------------------------------------------

func modelCases() []testCase {
	return []testCase{
		{"PutGetRoundTrip", func(b *bundle) {
			m := b.newModel(b.ids.Next(), "orders")
			b.putModel(m)
			got, err := b.getModel(m.ProjectID, m.Name)
			b.mustNil("ModelGet", err)
			b.wantModel("model after ModelPut", got, m)
		}},
		{"PutReplaces", func(b *bundle) {
			m := b.newModel(b.ids.Next(), "orders")
			b.putModel(m)
			m.Definition, m.Hash, m.Source, m.UpdatedAt = jsonModel2, "sha256:v2", "api", b.now.Add(time.Minute)
			b.putModel(m)
			got, err := b.getModel(m.ProjectID, m.Name)
			b.mustNil("ModelGet", err)
			b.wantModel("model after a second ModelPut", got, m)
			if n := len(b.listModels(m.ProjectID)); n != 1 {
				b.fatalf("ModelList after replacing = %d models, want 1", n)
			}
		}},
		{"PutZeroUpdatedAtIsNow", func(b *bundle) {
			m := b.newModel(b.ids.Next(), "orders")
			m.UpdatedAt, m.Definition = time.Time{}, nil
			before := time.Now().UTC().Truncate(time.Microsecond)
			b.putModel(m)
			got, err := b.getModel(m.ProjectID, m.Name)
			b.mustNil("ModelGet", err)
			if got.UpdatedAt.Before(before) || got.UpdatedAt.After(time.Now()) {
				b.fatalf("ModelPut with a zero UpdatedAt stored %s, want the put time (after %s)", got.UpdatedAt, before)
			}
			m.UpdatedAt = got.UpdatedAt
			b.wantModel("model with a nil Definition", got, m)
		}},
		{"ListByNameOfOneProject", func(b *bundle) {
			project, other := b.ids.Next(), b.ids.Next()
			if list := b.listModels(project); len(list) != 0 {
				b.fatalf("ModelList of an empty project = %d models, want none", len(list))
			}
			// Byte order, whatever the database's collation.
			for _, name := range []string{"orders_b", "Orders", "orders", "customers"} {
				b.putModel(b.newModel(project, name))
			}
			b.putModel(b.newModel(other, "aaa"))
			list := b.listModels(project)
			var names []string
			for _, m := range list {
				names = append(names, m.Name)
			}
			if fmt.Sprint(names) != "[Orders customers orders orders_b]" {
				b.fatalf("ModelList names = %v, want [Orders customers orders orders_b] (byte order, this project only)", names)
			}
			b.wantModel("ModelList row", list[0], b.newModel(project, "Orders"))
		}},
		{"DeleteAndMissing", func(b *bundle) {
			m := b.newModel(b.ids.Next(), "orders")
			b.putModel(m)
			b.putModel(b.newModel(m.ProjectID, "customers"))
			b.mustWrite("ModelDelete", func(tx store.Tx) error { return tx.ModelDelete(b.ctx(), m.ProjectID, m.Name) })
			_, err := b.getModel(m.ProjectID, m.Name)
			b.wantErr("ModelGet of a deleted model", err, store.ErrNotFound)
			if list := b.listModels(m.ProjectID); len(list) != 1 || list[0].Name != "customers" {
				b.fatalf("ModelList after deleting orders = %v, want only customers", list)
			}
			err = b.write(func(tx store.Tx) error { return tx.ModelDelete(b.ctx(), m.ProjectID, m.Name) })
			b.wantErr("ModelDelete of a missing model", err, store.ErrNotFound)
			_, err = b.getModel(b.ids.Next(), "customers")
			b.wantErr("ModelGet in another project", err, store.ErrNotFound)
		}},
	}
}

// --- builds -----------------------------------------------------------------

func buildCases() []testCase {
	return []testCase{
		{"InsertGetRoundTrip", func(b *bundle) {
			t1, w1 := ragged(0)
			t2, w2 := ragged(time.Minute)
			bd := b.newBuild(b.ids.Next(), "orders", "daily", t1)
			bd.Status, bd.Trigger, bd.Partitions, bd.Rebuild = api.BuildFailed, "key_sql", jsonPartitions, jsonRebuild
			bd.Rows, bd.Bytes, bd.KeyValue, bd.DataAsOf = 1234, 56789, "2024-05-01 10:00:00", &t1
			bd.Error, bd.WorkerID, bd.Publishes, bd.PublishedAt = "warehouse said « non »", "worker-7", 3, &t1
			bd.StartedAt, bd.EndedAt, bd.UpdatedAt = &t1, &t2, t2
			got := b.addBuild(bd)
			want := bd
			want.DataAsOf, want.PublishedAt, want.CreatedAt, want.StartedAt = &w1, &w1, w1, &w1
			want.EndedAt, want.UpdatedAt = &w2, w2
			b.wantBuild("build after BuildInsert with every field set (times UTC, truncated to the µs)", got, want)
		}},
		{"InsertDefaults", func(b *bundle) {
			bd := store.PreAggBuild{BuildUUID: "minimal", ProjectID: b.ids.Next(), Model: "m", PreAggregate: "p", CreatedAt: b.now}
			want := bd
			want.Status, want.UpdatedAt = api.BuildQueued, b.now
			b.wantBuild("build inserted with only uuid, names and CreatedAt", b.addBuild(bd), want)

			empty := b.newBuild(bd.ProjectID, "m", "p", b.now)
			empty.Partitions, empty.Rebuild = json.RawMessage{}, json.RawMessage{}
			want = empty
			want.Partitions, want.Rebuild = nil, nil
			b.wantBuild("build inserted with empty documents (stored NULL)", b.addBuild(empty), want)

			zero := b.newBuild(bd.ProjectID, "m", "p", time.Time{})
			zero.UpdatedAt = time.Time{}
			before := time.Now().UTC().Truncate(time.Microsecond)
			got := b.addBuild(zero)
			if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now()) || !got.UpdatedAt.Equal(got.CreatedAt) {
				b.fatalf("BuildInsert with zero times stored CreatedAt %s, UpdatedAt %s; want the insert time for both", got.CreatedAt, got.UpdatedAt)
			}
		}},
		{"InsertDuplicateIsConflict", func(b *bundle) {
			bd := b.addBuild(b.newBuild(b.ids.Next(), "orders", "daily", b.now))
			dup := bd
			dup.Model, dup.Status = "other", api.BuildFailed
			b.wantErr("BuildInsert of an existing uuid", b.insertBuild(dup), store.ErrConflict)
			b.wantBuild("build after the rejected duplicate", b.getBuild(bd.BuildUUID), bd)
		}},
		{"InsertSecondActiveIsConflict", func(b *bundle) {
			// The database itself keeps one active build per pre-aggregate.
			project := b.ids.Next()
			active := b.newBuild(project, "orders", "daily", b.now)
			active.Status = api.BuildActive
			b.addBuild(active)
			second := b.newBuild(project, "orders", "daily", b.now.Add(time.Second))
			second.Status = api.BuildActive
			b.wantErr("BuildInsert of a second active build", b.insertBuild(second), store.ErrConflict)
			// Other pre-aggregates, models and projects, and builds in
			// other statuses, are not affected.
			for _, bd := range []store.PreAggBuild{
				b.newBuild(project, "orders", "monthly", b.now),
				b.newBuild(project, "customers", "daily", b.now),
				b.newBuild(b.ids.Next(), "orders", "daily", b.now),
			} {
				bd.Status = api.BuildActive
				b.addBuild(bd)
			}
			for _, s := range []api.BuildStatus{api.BuildQueued, api.BuildBuilding, api.BuildSuperseded, api.BuildSuperseded, api.BuildFailed} {
				bd := b.newBuild(project, "orders", "daily", b.now)
				bd.Status = s
				b.addBuild(bd)
			}
			if n := len(b.activeBuilds(project)); n != 3 {
				b.fatalf("BuildsActive = %d builds, want 3", n)
			}
		}},
		{"InsertUnknownStatusIsError", func(b *bundle) {
			bd := b.newBuild(b.ids.Next(), "orders", "daily", b.now)
			bd.Status = "done"
			if err := b.insertBuild(bd); err == nil {
				b.fatalf("BuildInsert with status %q succeeded, want an error", bd.Status)
			}
		}},
		{"GetMissing", func(b *bundle) {
			_, err := readDo(b, func(q store.Querier) (store.PreAggBuild, error) { return q.BuildGet(b.ctx(), "nope") })
			b.wantErr("BuildGet of an unknown uuid", err, store.ErrNotFound)
		}},
		{"ListNewestFirstFiltered", func(b *bundle) {
			project := b.ids.Next()
			if list := b.listBuilds(project, "", "", 0, 10); len(list) != 0 {
				b.fatalf("BuildList of an empty project = %d builds, want none", len(list))
			}
			var all []store.PreAggBuild
			for i, key := range [][2]string{{"orders", "daily"}, {"orders", "monthly"}, {"customers", "daily"}, {"orders", "daily"}, {"orders", "daily"}} {
				all = append(all, b.addBuild(b.newBuild(project, key[0], key[1], b.now.Add(time.Duration(i)*time.Second))))
			}
			// Same microsecond as the newest: the uuid breaks the tie.
			all = append(all, b.addBuild(b.newBuild(project, "orders", "daily", all[4].CreatedAt)))
			b.addBuild(b.newBuild(b.ids.Next(), "orders", "daily", b.now.Add(time.Hour)))

			newest := buildUUIDs(all[5], all[4], all[3], all[2], all[1], all[0])
			b.wantBuildUUIDs("BuildList all", b.listBuilds(project, "", "", 0, 0), newest...)
			b.wantBuildUUIDs("BuildList first page", b.listBuilds(project, "", "", 0, 2), newest[:2]...)
			b.wantBuildUUIDs("BuildList second page", b.listBuilds(project, "", "", 2, 2), newest[2:4]...)
			b.wantBuildUUIDs("BuildList past the end", b.listBuilds(project, "", "", 6, 2))
			b.wantBuildUUIDs("BuildList orders/daily", b.listBuilds(project, "orders", "daily", 0, 10), buildUUIDs(all[5], all[4], all[3], all[0])...)
			b.wantBuildUUIDs("BuildList orders/daily page 2", b.listBuilds(project, "orders", "daily", 1, 2), buildUUIDs(all[4], all[3])...)
			b.wantBuildUUIDs("BuildList model orders", b.listBuilds(project, "orders", "", 0, 10), buildUUIDs(all[5], all[4], all[3], all[1], all[0])...)
			b.wantBuildUUIDs("BuildList pre-aggregate daily", b.listBuilds(project, "", "daily", 0, 10), buildUUIDs(all[5], all[4], all[3], all[2], all[0])...)
			b.wantBuildUUIDs("BuildList unknown", b.listBuilds(project, "nope", "", 0, 10))
			b.wantBuild("BuildList row", b.listBuilds(project, "", "", 0, 1)[0], all[5])
		}},
		{"ActiveOfOneProject", func(b *bundle) {
			project := b.ids.Next()
			if list := b.activeBuilds(project); len(list) != 0 {
				b.fatalf("BuildsActive of an empty project = %d, want none", len(list))
			}
			add := func(project int64, model, preAgg string, status api.BuildStatus) store.PreAggBuild {
				bd := b.newBuild(project, model, preAgg, b.now)
				bd.Status, bd.Partitions = status, jsonPartitions
				return b.addBuild(bd)
			}
			ob := add(project, "orders", "b", api.BuildActive)
			oa := add(project, "orders", "a", api.BuildActive)
			cz := add(project, "customers", "z", api.BuildActive)
			add(project, "orders", "a", api.BuildSuperseded)
			add(project, "orders", "c", api.BuildBuilding)
			add(project, "orders", "d", api.BuildFailed)
			add(project, "orders", "e", api.BuildQueued)
			add(b.ids.Next(), "orders", "a", api.BuildActive)
			list := b.activeBuilds(project)
			b.wantBuildUUIDs("BuildsActive (by model, then pre-aggregate)", list, buildUUIDs(cz, oa, ob)...)
			b.wantBuild("BuildsActive row", list[1], oa)
		}},
		{"QueuedAndBuildingBefore", func(b *bundle) {
			project := b.ids.Next()
			add := func(status api.BuildStatus, published *time.Time) store.PreAggBuild {
				bd := b.newBuild(project, "orders", fmt.Sprint("p", b.ids.Next()), b.now.Add(-time.Hour))
				bd.Status, bd.PublishedAt, bd.Publishes = status, published, 1
				return b.addBuild(bd)
			}
			// Created in another order than published, so the order by
			// PublishedAt is visible.
			qLate := add(api.BuildQueued, ptr(b.now.Add(-time.Second)))
			qEarly := add(api.BuildQueued, ptr(b.now.Add(-3*time.Second)))
			qBound := add(api.BuildQueued, ptr(b.now))
			add(api.BuildQueued, ptr(b.now.Add(time.Microsecond)))
			add(api.BuildQueued, nil)
			bLate := add(api.BuildBuilding, ptr(b.now.Add(-2*time.Second)))
			bEarly := add(api.BuildBuilding, ptr(b.now.Add(-4*time.Second)))
			bBound := add(api.BuildBuilding, ptr(b.now))
			add(api.BuildBuilding, ptr(b.now.Add(time.Microsecond)))
			for _, s := range []api.BuildStatus{api.BuildActive, api.BuildFailed, api.BuildSuperseded} {
				add(s, ptr(b.now.Add(-time.Hour)))
			}

			b.wantBuildUUIDs("BuildsQueuedBefore now", b.buildsQueuedBefore(b.now, 10), buildUUIDs(qEarly, qLate, qBound)...)
			b.wantBuildUUIDs("BuildsQueuedBefore limit 2", b.buildsQueuedBefore(b.now, 2), buildUUIDs(qEarly, qLate)...)
			b.wantBuildUUIDs("BuildsQueuedBefore limit 0 (all)", b.buildsQueuedBefore(b.now, 0), buildUUIDs(qEarly, qLate, qBound)...)
			b.wantBuildUUIDs("BuildsQueuedBefore 2s ago", b.buildsQueuedBefore(b.now.Add(-2*time.Second), 10), buildUUIDs(qEarly)...)
			b.wantBuild("BuildsQueuedBefore row", b.buildsQueuedBefore(b.now, 1)[0], qEarly)

			b.wantBuildUUIDs("BuildsBuildingBefore now", b.buildsBuildingBefore(b.now, 10), buildUUIDs(bEarly, bLate, bBound)...)
			b.wantBuildUUIDs("BuildsBuildingBefore limit 1", b.buildsBuildingBefore(b.now, 1), buildUUIDs(bEarly)...)
			b.wantBuildUUIDs("BuildsBuildingBefore limit 0 (all)", b.buildsBuildingBefore(b.now, 0), buildUUIDs(bEarly, bLate, bBound)...)
			b.wantBuildUUIDs("BuildsBuildingBefore 3s ago", b.buildsBuildingBefore(b.now.Add(-3*time.Second), 10), buildUUIDs(bEarly)...)
			b.wantBuild("BuildsBuildingBefore row", b.buildsBuildingBefore(b.now, 1)[0], bEarly)
		}},
		{"Pending", func(b *bundle) {
			project := b.ids.Next()
			if b.buildPending(project, "orders", "daily") {
				b.fatalf("BuildPending without builds = true, want false")
			}
			// Finished builds, and pending builds of other pre-aggregates,
			// models and projects, are not pending builds of orders/daily.
			for _, s := range []api.BuildStatus{api.BuildActive, api.BuildSuperseded, api.BuildFailed} {
				bd := b.newBuild(project, "orders", "daily", b.now)
				bd.Status = s
				b.addBuild(bd)
			}
			b.addBuild(b.newBuild(project, "orders", "monthly", b.now))
			b.addBuild(b.newBuild(project, "customers", "daily", b.now))
			b.addBuild(b.newBuild(b.ids.Next(), "orders", "daily", b.now))
			if b.buildPending(project, "orders", "daily") {
				b.fatalf("BuildPending with only finished builds and others' pending ones = true, want false")
			}
			q := b.addBuild(b.newBuild(project, "orders", "daily", b.now))
			if !b.buildPending(project, "orders", "daily") {
				b.fatalf("BuildPending with a queued build = false, want true")
			}
			_, err := b.buildTransition(q.BuildUUID, []api.BuildStatus{api.BuildQueued}, api.BuildBuilding, store.BuildUpdate{}, b.now)
			b.mustNil("BuildTransition queued -> building", err)
			if !b.buildPending(project, "orders", "daily") {
				b.fatalf("BuildPending with a building build = false, want true")
			}
			_, err = b.buildTransition(q.BuildUUID, []api.BuildStatus{api.BuildBuilding}, api.BuildFailed, store.BuildUpdate{}, b.now)
			b.mustNil("BuildTransition building -> failed", err)
			if b.buildPending(project, "orders", "daily") {
				b.fatalf("BuildPending once the build failed = true, want false")
			}
		}},
		{"TransitionSetsOnlyGivenFields", func(b *bundle) {
			bd := b.newBuild(b.ids.Next(), "orders", "daily", b.now)
			bd.Rebuild, bd.KeyValue, bd.Publishes, bd.PublishedAt = jsonRebuild, "k1", 1, ptr(b.now)
			bd = b.addBuild(bd)
			t1, t2 := b.now.Add(time.Second), b.now.Add(2*time.Second)
			got, err := b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildQueued}, api.BuildBuilding,
				store.BuildUpdate{WorkerID: ptr("worker-1"), StartedAt: ptr(t1), PublishedAt: ptr(t1)}, t1)
			b.mustNil("BuildTransition queued -> building", err)
			want := bd
			want.Status, want.WorkerID, want.StartedAt, want.PublishedAt, want.UpdatedAt = api.BuildBuilding, "worker-1", ptr(t1), ptr(t1), t1
			b.wantBuild("BuildTransition result", got, want)
			b.wantBuild("build after queued -> building", b.getBuild(bd.BuildUUID), want)

			// Every field at once.
			got, err = b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildBuilding}, api.BuildFailed, store.BuildUpdate{
				Partitions: jsonPartitions, Rows: ptr(int64(7)), Bytes: ptr(int64(8)), KeyValue: ptr("k2"), DataAsOf: ptr(t1),
				Error: ptr("the build has more than 5 rows (max_rows)"), WorkerID: ptr("worker-2"), PublishedAt: ptr(t2),
				StartedAt: ptr(t2), EndedAt: ptr(t2),
			}, t2)
			b.mustNil("BuildTransition building -> failed", err)
			want.Status, want.Partitions, want.Rows, want.Bytes, want.KeyValue = api.BuildFailed, jsonPartitions, 7, 8, "k2"
			want.DataAsOf, want.Error, want.WorkerID, want.PublishedAt = ptr(t1), "the build has more than 5 rows (max_rows)", "worker-2", ptr(t2)
			want.StartedAt, want.EndedAt, want.UpdatedAt = ptr(t2), ptr(t2), t2
			b.wantBuild("BuildTransition result setting every field", got, want)
			b.wantBuild("build after a transition setting every field", b.getBuild(bd.BuildUUID), want)

			// A non-nil empty Partitions clears them; nothing else moves.
			got, err = b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildFailed}, api.BuildSuperseded,
				store.BuildUpdate{Partitions: json.RawMessage{}}, t2)
			b.mustNil("BuildTransition failed -> superseded", err)
			want.Status, want.Partitions = api.BuildSuperseded, nil
			b.wantBuild("build after clearing Partitions", got, want)
		}},
		{"TransitionFromSet", func(b *bundle) {
			bd := b.addBuild(b.newBuild(b.ids.Next(), "orders", "daily", b.now))
			// A status outside from is ErrConflict with the current row,
			// and changes nothing.
			got, err := b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildBuilding, api.BuildActive}, api.BuildFailed,
				store.BuildUpdate{Error: ptr("late")}, b.now.Add(time.Minute))
			b.wantErr("BuildTransition from [building active] of a queued build", err, store.ErrConflict)
			b.wantBuild("row returned with ErrConflict", got, bd)
			b.wantBuild("build after the refused transition", b.getBuild(bd.BuildUUID), bd)
			// Any status of from matches.
			got, err = b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildBuilding, api.BuildQueued}, api.BuildFailed,
				store.BuildUpdate{}, b.now)
			b.mustNil("BuildTransition from [building queued] of a queued build", err)
			if got.Status != api.BuildFailed {
				b.fatalf("status after the transition = %s, want failed", got.Status)
			}
			_, err = b.buildTransition("nope", []api.BuildStatus{api.BuildQueued}, api.BuildBuilding, store.BuildUpdate{}, b.now)
			b.wantErr("BuildTransition of an unknown uuid", err, store.ErrNotFound)
		}},
		{"TransitionInvalidIsError", func(b *bundle) {
			bd := b.addBuilding(b.ids.Next(), "orders", "daily", b.now)
			for _, tc := range []struct {
				from []api.BuildStatus
				to   api.BuildStatus
			}{
				{[]api.BuildStatus{api.BuildBuilding}, "done"},
				{[]api.BuildStatus{"waiting"}, api.BuildFailed},
				{nil, api.BuildFailed},
				// Only BuildPromote makes a build active.
				{[]api.BuildStatus{api.BuildBuilding}, api.BuildActive},
			} {
				_, err := b.buildTransition(bd.BuildUUID, tc.from, tc.to, store.BuildUpdate{}, b.now.Add(time.Minute))
				if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
					b.fatalf("BuildTransition %v -> %q = %v, want a plain error", tc.from, tc.to, err)
				}
			}
			b.wantBuild("build after invalid transitions", b.getBuild(bd.BuildUUID), bd)
		}},
		{"TransitionRace", func(b *bundle) {
			bd := b.addBuild(b.newBuild(b.ids.Next(), "orders", "daily", b.now))
			errs := make([]error, buildRacers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range buildRacers {
				wg.Go(func() {
					<-start
					_, errs[i] = b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildQueued}, api.BuildBuilding,
						store.BuildUpdate{WorkerID: ptr(fmt.Sprintf("worker-%d", i))}, b.now)
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					b.fatalf("racers %d and %d both claimed the build", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, store.ErrConflict):
					b.fatalf("racer %d got %v, want ErrConflict", i, err)
				}
			}
			if winner < 0 {
				b.fatalf("no racer among %d claimed the build", buildRacers)
			}
			if got := b.getBuild(bd.BuildUUID); got.WorkerID != fmt.Sprintf("worker-%d", winner) {
				b.fatalf("build's worker = %q, want the winner worker-%d", got.WorkerID, winner)
			}
		}},
		{"PromoteFirstBuild", func(b *bundle) {
			bd := b.addBuilding(b.ids.Next(), "orders", "daily", b.now)
			t1 := b.now.Add(time.Minute)
			got, err := b.promote(bd.BuildUUID, store.BuildUpdate{
				Partitions: jsonPartitions, Rows: ptr(int64(10)), Bytes: ptr(int64(1000)), KeyValue: ptr("k"),
				DataAsOf: ptr(b.now), EndedAt: ptr(t1),
			}, t1)
			b.mustNil("BuildPromote of the first build", err)
			want := bd
			want.Status, want.Partitions, want.Rows, want.Bytes, want.KeyValue = api.BuildActive, jsonPartitions, 10, 1000, "k"
			want.DataAsOf, want.EndedAt, want.UpdatedAt = ptr(b.now), ptr(t1), t1
			b.wantBuild("BuildPromote result", got, want)
			b.wantBuild("build after BuildPromote", b.getBuild(bd.BuildUUID), want)
			b.wantBuildUUIDs("BuildsActive", b.activeBuilds(bd.ProjectID), bd.BuildUUID)
		}},
		{"PromoteSwaps", func(b *bundle) {
			project := b.ids.Next()
			old := b.addBuilding(project, "orders", "daily", b.now)
			t1 := b.now.Add(time.Minute)
			_, err := b.promote(old.BuildUUID, store.BuildUpdate{Partitions: jsonPartitions}, t1)
			b.mustNil("BuildPromote of the first build", err)
			other := b.addBuilding(project, "orders", "monthly", b.now)
			_, err = b.promote(other.BuildUUID, store.BuildUpdate{}, t1)
			b.mustNil("BuildPromote of another pre-aggregate's build", err)

			next := b.addBuilding(project, "orders", "daily", b.now.Add(time.Second))
			t2 := b.now.Add(2 * time.Minute)
			got, err := b.promote(next.BuildUUID, store.BuildUpdate{Partitions: jsonPartition2}, t2)
			b.mustNil("BuildPromote of the newer build", err)
			if got.Status != api.BuildActive {
				b.fatalf("newer build after BuildPromote is %s, want active", got.Status)
			}
			prev := b.getBuild(old.BuildUUID)
			if prev.Status != api.BuildSuperseded || !prev.UpdatedAt.Equal(t2) {
				b.fatalf("previous build after the swap: %s updated %s, want superseded at %s", prev.Status, prev.UpdatedAt, t2)
			}
			var d diff
			d.json("previous build's Partitions", prev.Partitions, jsonPartitions)
			b.check("previous build keeps its objects", d)
			b.wantBuildUUIDs("BuildsActive after the swap", b.activeBuilds(project), next.BuildUUID, other.BuildUUID)
		}},
		{"PromoteLateOlderBuildIsSuperseded", func(b *bundle) {
			project := b.ids.Next()
			older := b.addBuilding(project, "orders", "daily", b.now)
			newer := b.addBuilding(project, "orders", "daily", b.now.Add(time.Second))
			t1, t2 := b.now.Add(time.Minute), b.now.Add(2*time.Minute)
			_, err := b.promote(newer.BuildUUID, store.BuildUpdate{Partitions: jsonPartition2}, t1)
			b.mustNil("BuildPromote of the newer build", err)
			// The older build finishes late: it must not replace the newer.
			got, err := b.promote(older.BuildUUID, store.BuildUpdate{Partitions: jsonPartitions, Rows: ptr(int64(3)), EndedAt: ptr(t2)}, t2)
			b.wantErr("BuildPromote of an older build after a newer one became active", err, store.ErrConflict)
			want := older
			want.Status, want.Partitions, want.Rows, want.EndedAt, want.UpdatedAt = api.BuildSuperseded, jsonPartitions, 3, ptr(t2), t2
			b.wantBuild("late build returned with ErrConflict (superseded, its report kept)", got, want)
			b.wantBuild("late build after BuildPromote", b.getBuild(older.BuildUUID), want)
			b.wantBuildUUIDs("BuildsActive keeps the newer build", b.activeBuilds(project), newer.BuildUUID)
			if cur := b.getBuild(newer.BuildUUID); cur.Status != api.BuildActive || !cur.UpdatedAt.Equal(t1) {
				b.fatalf("newer build after the late promote: %s updated %s, want active, untouched since %s", cur.Status, cur.UpdatedAt, t1)
			}
		}},
		{"PromoteSameTimeUUIDDecides", func(b *bundle) {
			project := b.ids.Next()
			first := b.addBuilding(project, "orders", "daily", b.now)
			second := b.addBuilding(project, "orders", "daily", b.now) // larger uuid
			_, err := b.promote(second.BuildUUID, store.BuildUpdate{}, b.now)
			b.mustNil("BuildPromote of the larger uuid", err)
			_, err = b.promote(first.BuildUUID, store.BuildUpdate{}, b.now)
			b.wantErr("BuildPromote of the smaller uuid created in the same µs", err, store.ErrConflict)
			b.wantBuildUUIDs("BuildsActive", b.activeBuilds(project), second.BuildUUID)
		}},
		{"PromoteNotBuildingIsConflict", func(b *bundle) {
			project := b.ids.Next()
			queued := b.addBuild(b.newBuild(project, "orders", "daily", b.now))
			got, err := b.promote(queued.BuildUUID, store.BuildUpdate{Rows: ptr(int64(1))}, b.now.Add(time.Minute))
			b.wantErr("BuildPromote of a queued build", err, store.ErrConflict)
			b.wantBuild("row returned for a queued build", got, queued)
			b.wantBuild("queued build after the refused promote", b.getBuild(queued.BuildUUID), queued)

			active := b.addBuilding(project, "orders", "daily", b.now)
			active, err = b.promote(active.BuildUUID, store.BuildUpdate{}, b.now)
			b.mustNil("BuildPromote", err)
			_, err = b.promote(active.BuildUUID, store.BuildUpdate{Rows: ptr(int64(1))}, b.now.Add(time.Minute))
			b.wantErr("BuildPromote of the active build again", err, store.ErrConflict)
			b.wantBuild("active build after a second promote", b.getBuild(active.BuildUUID), active)

			failed := b.addBuilding(project, "orders", "daily", b.now.Add(time.Second))
			_, err = b.buildTransition(failed.BuildUUID, []api.BuildStatus{api.BuildBuilding}, api.BuildFailed, store.BuildUpdate{}, b.now)
			b.mustNil("BuildTransition building -> failed", err)
			_, err = b.promote(failed.BuildUUID, store.BuildUpdate{}, b.now)
			b.wantErr("BuildPromote of a failed build", err, store.ErrConflict)
			b.wantBuildUUIDs("BuildsActive keeps the active build", b.activeBuilds(project), active.BuildUUID)

			_, err = b.promote("nope", store.BuildUpdate{}, b.now)
			b.wantErr("BuildPromote of an unknown uuid", err, store.ErrNotFound)
		}},
		{"PromoteRolledBackWithSavepoint", func(b *bundle) {
			// Store.Do gives each caller a savepoint: a failed caller's
			// promotion must vanish entirely, the previous build serving on.
			project := b.ids.Next()
			old := b.addBuilding(project, "orders", "daily", b.now)
			old, err := b.promote(old.BuildUUID, store.BuildUpdate{}, b.now)
			b.mustNil("BuildPromote", err)
			next := b.addBuilding(project, "orders", "daily", b.now.Add(time.Second))
			b.mustWrite("a promotion rolled back to its savepoint", func(tx store.Tx) error {
				if err := tx.Savepoint(b.ctx(), "caller_2"); err != nil {
					return err
				}
				if _, err := tx.BuildPromote(b.ctx(), next.BuildUUID, store.BuildUpdate{Rows: ptr(int64(9))}, b.now.Add(time.Minute)); err != nil {
					return err
				}
				return tx.RollbackTo(b.ctx(), "caller_2")
			})
			b.wantBuild("previous active build", b.getBuild(old.BuildUUID), old)
			b.wantBuild("rolled-back build", b.getBuild(next.BuildUUID), next)
			// And the promotion still works afterwards.
			_, err = b.promote(next.BuildUUID, store.BuildUpdate{}, b.now.Add(time.Minute))
			b.mustNil("BuildPromote after the rollback", err)
			b.wantBuildUUIDs("BuildsActive", b.activeBuilds(project), next.BuildUUID)
		}},
		{"PromoteRaceUnderReads", func(b *bundle) {
			// Builds of one pre-aggregate finish at once, while readers
			// look for the active build: the newest wins whatever the
			// commit order, every other is superseded, and no reader ever
			// sees two active builds, or none once one was active. A few
			// rounds, since any one race may happen to serialise.
			project := b.ids.Next()
			first := b.addBuilding(project, "orders", "daily", b.now.Add(-time.Hour))
			_, err := b.promote(first.BuildUUID, store.BuildUpdate{}, b.now)
			b.mustNil("BuildPromote of the first build", err)
			for round := range promoteRounds {
				builds := make([]store.PreAggBuild, promoteRacers)
				for i := range builds {
					builds[i] = b.addBuilding(project, "orders", "daily", b.now.Add(time.Duration(round)*time.Hour+time.Duration(i)*time.Second))
				}
				errs := make([]error, promoteRacers)
				start := make(chan struct{})
				var done atomic.Bool
				var readErrs [2]error
				var readers sync.WaitGroup
				for r := range readErrs {
					readers.Go(func() {
						<-start
						for !done.Load() {
							list, err := readDo(b, func(q store.Querier) ([]store.PreAggBuild, error) { return q.BuildsActive(b.ctx(), project) })
							if err == nil && len(list) != 1 {
								err = fmt.Errorf("round %d: a reader saw %d active builds, want exactly 1", round, len(list))
							}
							if err != nil {
								readErrs[r] = err
								return
							}
						}
					})
				}
				var wg sync.WaitGroup
				for i := range promoteRacers {
					wg.Go(func() {
						<-start
						_, errs[i] = b.promote(builds[i].BuildUUID, store.BuildUpdate{}, b.now.Add(time.Minute))
					})
				}
				close(start)
				wg.Wait()
				done.Store(true)
				readers.Wait()
				for _, err := range readErrs {
					if err != nil {
						b.fatalf("%v", err)
					}
				}
				newest := builds[promoteRacers-1]
				b.mustNil(fmt.Sprintf("round %d: BuildPromote of the newest build", round), errs[promoteRacers-1])
				for i, err := range errs[:promoteRacers-1] {
					if err != nil && !errors.Is(err, store.ErrConflict) {
						b.fatalf("round %d: BuildPromote of build %d = %v, want nil or ErrConflict", round, i, err)
					}
					if got := b.getBuild(builds[i].BuildUUID); got.Status != api.BuildSuperseded {
						b.fatalf("round %d: build %d after the race is %s, want superseded", round, i, got.Status)
					}
				}
				b.wantBuildUUIDs(fmt.Sprintf("round %d: BuildsActive after the race", round), b.activeBuilds(project), newest.BuildUUID)
			}
			if got := b.getBuild(first.BuildUUID); got.Status != api.BuildSuperseded {
				b.fatalf("first build after the races is %s, want superseded", got.Status)
			}
		}},
		{"MarkRepublished", func(b *bundle) {
			bd := b.newBuild(b.ids.Next(), "orders", "daily", b.now.Add(-time.Minute))
			bd.Publishes, bd.PublishedAt = 1, ptr(b.now.Add(-time.Minute))
			bd = b.addBuild(bd)
			b.wantBuildUUIDs("BuildsQueuedBefore with a lost notification", b.buildsQueuedBefore(b.now.Add(-time.Second), 10), bd.BuildUUID)
			got, err := txDo(b, func(tx store.Tx) (store.PreAggBuild, error) {
				return tx.BuildMarkRepublished(b.ctx(), bd.BuildUUID, b.now)
			})
			b.mustNil("BuildMarkRepublished", err)
			want := bd
			want.Publishes, want.PublishedAt = 2, ptr(b.now)
			want.UpdatedAt = got.UpdatedAt // the contract leaves it open
			b.wantBuild("BuildMarkRepublished result", got, want)
			b.wantBuild("build after BuildMarkRepublished", b.getBuild(bd.BuildUUID), want)
			b.wantBuildUUIDs("BuildsQueuedBefore after the re-notification", b.buildsQueuedBefore(b.now.Add(-time.Second), 10))
			_, err = txDo(b, func(tx store.Tx) (store.PreAggBuild, error) {
				return tx.BuildMarkRepublished(b.ctx(), "nope", b.now)
			})
			b.wantErr("BuildMarkRepublished of an unknown uuid", err, store.ErrNotFound)
		}},
	}
}

// --- refresh state ----------------------------------------------------------

func stateCases() []testCase {
	return []testCase{
		{"GetMissing", func(b *bundle) {
			_, err := b.getState(b.ids.Next(), "orders", "daily")
			b.wantErr("PreAggStateGet of a missing state", err, store.ErrNotFound)
		}},
		{"CASVersions", func(b *bundle) {
			t1, w1 := ragged(0)
			t2, w2 := ragged(time.Hour)
			st := store.PreAggState{ProjectID: b.ids.Next(), Model: "orders", PreAggregate: "daily",
				NextCronAt: &t1, KeyValue: "2024-05-01", KeyCheckedAt: &t2, UpdatedAt: t1}
			b.mustNil("PreAggStateCAS creating the row", b.cas(st, 0))
			got, err := b.getState(st.ProjectID, st.Model, st.PreAggregate)
			b.mustNil("PreAggStateGet", err)
			want := st
			want.Version, want.NextCronAt, want.KeyCheckedAt, want.UpdatedAt = 1, &w1, &w2, w1
			b.wantState("state after the first CAS (times UTC, truncated to the µs)", got, want)

			b.wantErr("PreAggStateCAS creating an existing row", b.cas(st, 0), store.ErrConflict)
			b.wantErr("PreAggStateCAS from a version never written", b.cas(st, 5), store.ErrConflict)

			next := store.PreAggState{ProjectID: st.ProjectID, Model: st.Model, PreAggregate: st.PreAggregate,
				KeyValue: "2024-05-02", UpdatedAt: b.now}
			b.mustNil("PreAggStateCAS from version 1", b.cas(next, 1))
			b.wantErr("PreAggStateCAS from the stale version 1", b.cas(st, 1), store.ErrConflict)
			got, err = b.getState(st.ProjectID, st.Model, st.PreAggregate)
			b.mustNil("PreAggStateGet", err)
			want = next
			want.Version = 2
			b.wantState("state after the second CAS (nil times cleared, refused writes ignored)", got, want)

			// Each pre-aggregate has its own row.
			_, err = b.getState(st.ProjectID, st.Model, "monthly")
			b.wantErr("PreAggStateGet of another pre-aggregate", err, store.ErrNotFound)
			b.mustNil("PreAggStateCAS creating another pre-aggregate's row", b.cas(store.PreAggState{
				ProjectID: st.ProjectID, Model: st.Model, PreAggregate: "monthly"}, 0))
		}},
		{"CASRace", func(b *bundle) {
			// Several servers decide at once who triggers: exactly one
			// write per version gets through.
			project := b.ids.Next()
			for prev := int64(0); prev < 2; prev++ {
				errs := make([]error, buildRacers)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range buildRacers {
					wg.Go(func() {
						<-start
						errs[i] = b.cas(store.PreAggState{ProjectID: project, Model: "orders", PreAggregate: "daily",
							KeyValue: fmt.Sprintf("server-%d", i), UpdatedAt: b.now}, prev)
					})
				}
				close(start)
				wg.Wait()
				winner := -1
				for i, err := range errs {
					switch {
					case err == nil && winner >= 0:
						b.fatalf("from version %d, writers %d and %d both got through", prev, winner, i)
					case err == nil:
						winner = i
					case !errors.Is(err, store.ErrConflict):
						b.fatalf("from version %d, writer %d got %v, want ErrConflict", prev, i, err)
					}
				}
				if winner < 0 {
					b.fatalf("from version %d, no writer among %d got through", prev, buildRacers)
				}
				got, err := b.getState(project, "orders", "daily")
				b.mustNil("PreAggStateGet", err)
				if got.Version != prev+1 || got.KeyValue != fmt.Sprintf("server-%d", winner) {
					b.fatalf("state after the race from %d = version %d by %q, want version %d by server-%d",
						prev, got.Version, got.KeyValue, prev+1, winner)
				}
			}
		}},
	}
}
