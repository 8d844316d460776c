package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// transitionRacers is how many goroutines race to move one pending query.
const transitionRacers = 16

// jsonColumns is a result's column list; like the other samples, its
// whitespace and escapes would not survive jsonb.
var jsonColumns = json.RawMessage(`[ {"name":"id", "type" :"int8"}, {"name":"caf\u00e9","type":"text"} ]`)

// A metric query's request and its pre-aggregate verdict, in the same
// jsonb-hostile style.
var (
	jsonMetricQuery = json.RawMessage(`{"exploreName" : "orders", "metrics":["orders_revenue"],  "limit": 500, "limit": 10}`)
	jsonPreAggHit   = json.RawMessage(`{ "hit":true,"name" :"daily", "buildUuid":"b-1" ,"builtAt":"2024-01-02T03:04:05.000001Z"}`)
	jsonPreAggMiss  = json.RawMessage(`{"hit": false, "reason": {"code":"MATERIALIZATION_MISSING", "message":"gone \u2014 rebuilding"}}`)
)

// newQuery builds an unsaved pending query of project created at created.
// Its uuid sorts by creation, like the UUIDv7s the server hands out.
func (b *bundle) newQuery(projectID int64, created time.Time) store.Query {
	return store.Query{
		QueryUUID: fmt.Sprintf("0190%016x", b.ids.Next()),
		ProjectID: projectID,
		SQL:       "SELECT id, name FROM customers WHERE region = 'eu'",
		Lane:      "interactive",
		CacheKey:  "key-" + fmt.Sprint(projectID),
		Status:    api.QueryPending,
		CreatedAt: created,
		UpdatedAt: created,
	}
}

func (b *bundle) insertQuery(q store.Query) error {
	return b.write(func(tx store.Tx) error { return b.queryWrites(tx).QueryInsert(b.ctx(), q) })
}

// addQuery inserts q and returns it as read back.
func (b *bundle) addQuery(q store.Query) store.Query {
	b.t.Helper()
	b.mustNil("QueryInsert "+q.QueryUUID, b.insertQuery(q))
	return b.getQuery(q.QueryUUID)
}

func (b *bundle) getQuery(uuid string) store.Query {
	b.t.Helper()
	q, err := readQ(b, func(q store.QueryQuerier) (store.Query, error) { return q.QueryGet(b.ctx(), uuid) })
	b.mustNil("QueryGet "+uuid, err)
	return q
}

func (b *bundle) transition(uuid string, from []api.QueryStatus, to api.QueryStatus, upd store.QueryUpdate, now time.Time) (store.Query, error) {
	return writeQ(b, func(tx store.QueryTx) (store.Query, error) {
		return tx.QueryTransition(b.ctx(), uuid, from, to, upd, now)
	})
}

func (b *bundle) listQueries(projectID int64, offset, limit int) ([]store.Query, int64) {
	b.t.Helper()
	var total int64
	list, err := readQ(b, func(q store.QueryQuerier) ([]store.Query, error) {
		list, n, err := q.QueryList(b.ctx(), projectID, offset, limit)
		total = n
		return list, err
	})
	b.mustNil("QueryList", err)
	return list, total
}

func (b *bundle) cached(projectID int64, key string, now time.Time) (store.Query, error) {
	return readQ(b, func(q store.QueryQuerier) (store.Query, error) { return q.QueryCached(b.ctx(), projectID, key, now) })
}

func (b *bundle) queuedBefore(before time.Time, limit int) []store.Query {
	b.t.Helper()
	list, err := readQ(b, func(q store.QueryQuerier) ([]store.Query, error) {
		return q.QueriesQueuedBefore(b.ctx(), before, limit)
	})
	b.mustNil("QueriesQueuedBefore", err)
	return list
}

func (b *bundle) createdBefore(statuses []api.QueryStatus, t time.Time, limit int) []store.Query {
	b.t.Helper()
	list, err := readQ(b, func(q store.QueryQuerier) ([]store.Query, error) {
		return q.QueriesCreatedBefore(b.ctx(), statuses, t, limit)
	})
	b.mustNil("QueriesCreatedBefore", err)
	return list
}

func (b *bundle) queueStats() store.QueueStats {
	b.t.Helper()
	s, err := readQ(b, func(q store.QueryQuerier) (store.QueueStats, error) { return q.QueueStats(b.ctx()) })
	b.mustNil("QueueStats", err)
	return s
}

// wantQuery compares every field; Columns byte for byte.
func (b *bundle) wantQuery(what string, got, want store.Query) {
	b.t.Helper()
	var d diff
	d.eq("QueryUUID", got.QueryUUID, want.QueryUUID)
	d.eq("ProjectID", got.ProjectID, want.ProjectID)
	d.eq("SQL", got.SQL, want.SQL)
	d.eq("Lane", got.Lane, want.Lane)
	d.eq("CacheKey", got.CacheKey, want.CacheKey)
	d.eq("CacheHit", got.CacheHit, want.CacheHit)
	d.eq("Status", got.Status, want.Status)
	d.eq("Error", got.Error, want.Error)
	d.json("Columns", got.Columns, want.Columns)
	d.eq("TotalRows", got.TotalRows, want.TotalRows)
	d.eq("ResultKey", got.ResultKey, want.ResultKey)
	d.eq("WorkerID", got.WorkerID, want.WorkerID)
	d.eq("Publishes", got.Publishes, want.Publishes)
	d.timePtr("PublishedAt", got.PublishedAt, want.PublishedAt)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.timePtr("StartedAt", got.StartedAt, want.StartedAt)
	d.timePtr("EndedAt", got.EndedAt, want.EndedAt)
	d.timePtr("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	d.eq("Kind", got.Kind, want.Kind)
	d.json("MetricQuery", got.MetricQuery, want.MetricQuery)
	d.eq("Target", got.Target, want.Target)
	d.json("PreAggregate", got.PreAggregate, want.PreAggregate)
	d.eq("BuildUUID", got.BuildUUID, want.BuildUUID)
	d.eq("ClaimTokenID", got.ClaimTokenID, want.ClaimTokenID)
	b.check(what, d)
}

// newMetricQuery is newQuery as a metric query served from a build.
func (b *bundle) newMetricQuery(projectID int64, created time.Time) store.Query {
	q := b.newQuery(projectID, created)
	q.Kind, q.MetricQuery, q.Target = "metric", jsonMetricQuery, "preagg"
	q.SQL = `SELECT "orders_revenue" FROM preagg`
	q.PreAggregate, q.BuildUUID = jsonPreAggHit, "b-1"
	return q
}

// wantQueryUUIDs checks a query list by uuid, in order.
func (b *bundle) wantQueryUUIDs(what string, got []store.Query, want ...string) {
	b.t.Helper()
	uuids := make([]string, len(got))
	for i, q := range got {
		uuids[i] = q.QueryUUID
	}
	if fmt.Sprint(uuids) != fmt.Sprint(want) {
		b.fatalf("%s: uuids = %v, want %v", what, uuids, want)
	}
}

// uuidsOf lists the uuids of qs, in order.
func uuidsOf(qs ...store.Query) []string {
	out := make([]string, len(qs))
	for i, q := range qs {
		out[i] = q.QueryUUID
	}
	return out
}

func queryCases() []testCase {
	return []testCase{
		{"InsertGetRoundTrip", func(b *bundle) {
			q := b.newQuery(b.ids.Next(), b.now.Add(-time.Minute))
			q.Status, q.CacheHit = api.QueryReady, true
			q.Error = "partial: warehouse said « non »"
			q.Columns, q.TotalRows, q.ResultKey, q.WorkerID = jsonColumns, 1234, "results/abc", "worker-7"
			q.Publishes = 3
			q.PublishedAt, q.StartedAt = ptr(b.now.Add(-50*time.Second)), ptr(b.now.Add(-40*time.Second))
			q.EndedAt, q.ExpiresAt = ptr(b.now.Add(-30*time.Second)), ptr(b.now.Add(time.Hour))
			q.UpdatedAt = b.now
			b.wantQuery("query after QueryInsert with every field set", b.addQuery(q), q)
		}},
		{"MetricFieldsRoundTrip", func(b *bundle) {
			project := b.ids.Next()
			q := b.newMetricQuery(project, b.now)
			b.wantQuery("metric query after QueryInsert", b.addQuery(q), q)
			// Every way of reading a query carries the metric fields.
			list, _ := b.listQueries(project, 0, 10)
			b.wantQueryUUIDs("QueryList of the metric query", list, q.QueryUUID)
			b.wantQuery("QueryList row", list[0], q)

			queued := b.newMetricQuery(project, b.now.Add(-time.Hour))
			queued.Status, queued.PublishedAt, queued.Publishes = api.QueryQueued, ptr(b.now.Add(-time.Minute)), 1
			queued = b.addQuery(queued)
			b.wantQuery("QueriesQueuedBefore row", b.queuedBefore(b.now, 10)[0], queued)
			b.wantQuery("QueriesCreatedBefore row", b.createdBefore([]api.QueryStatus{api.QueryQueued}, b.now, 10)[0], queued)
			rep, err := writeQ(b, func(tx store.QueryTx) (store.Query, error) {
				return tx.QueryMarkRepublished(b.ctx(), queued.QueryUUID, b.now)
			})
			b.mustNil("QueryMarkRepublished", err)
			d := diff{}
			d.eq("Kind", rep.Kind, "metric")
			d.json("MetricQuery", rep.MetricQuery, jsonMetricQuery)
			d.json("PreAggregate", rep.PreAggregate, jsonPreAggHit)
			b.check("QueryMarkRepublished result", d)

			ready := b.newMetricQuery(project, b.now)
			ready.Status, ready.CacheKey, ready.ExpiresAt = api.QueryReady, "metric-key", ptr(b.now.Add(time.Hour))
			ready = b.addQuery(ready)
			got, err := b.cached(project, "metric-key", b.now)
			b.mustNil("QueryCached", err)
			b.wantQuery("QueryCached row", got, ready)
		}},
		{"SQLQueryKeepsEmptyMetricFields", func(b *bundle) {
			// A query inserted without the metric fields (every SQL query)
			// reads back with them empty: the columns' defaults change
			// nothing.
			q := b.addQuery(b.newQuery(b.ids.Next(), b.now))
			var d diff
			d.eq("Kind", q.Kind, "")
			d.json("MetricQuery", q.MetricQuery, nil)
			d.eq("Target", q.Target, "")
			d.json("PreAggregate", q.PreAggregate, nil)
			d.eq("BuildUUID", q.BuildUUID, "")
			b.check("SQL query's metric fields", d)
		}},
		{"TransitionFallsBackToWarehouse", func(b *bundle) {
			// A pre-aggregate query whose build's Parquet was lost goes back
			// to the queue aimed at the warehouse.
			q := b.newMetricQuery(b.ids.Next(), b.now)
			q.Status, q.WorkerID = api.QueryExecuting, "preagg-worker"
			q = b.addQuery(q)
			t1 := b.now.Add(time.Second)
			warehouseSQL := `SELECT sum("revenue") AS "orders_revenue" FROM "orders" AS t`
			got, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryExecuting}, api.QueryQueued, store.QueryUpdate{
				SQL: ptr(warehouseSQL), Target: ptr("warehouse"), PreAggregate: jsonPreAggMiss, BuildUUID: ptr(""),
				WorkerID: ptr(""), PublishedAt: ptr(t1),
			}, t1)
			b.mustNil("QueryTransition executing -> queued (fallback)", err)
			want := q
			want.Status, want.SQL, want.Target, want.PreAggregate, want.BuildUUID = api.QueryQueued, warehouseSQL, "warehouse", jsonPreAggMiss, ""
			want.WorkerID, want.PublishedAt, want.UpdatedAt = "", ptr(t1), t1
			b.wantQuery("QueryTransition result", got, want)
			b.wantQuery("query after the fallback", b.getQuery(q.QueryUUID), want)

			// Unset fields leave them alone; an empty PreAggregate clears it.
			t2 := b.now.Add(2 * time.Second)
			got, err = b.transition(q.QueryUUID, []api.QueryStatus{api.QueryQueued}, api.QueryExecuting, store.QueryUpdate{
				WorkerID: ptr("warehouse-worker"),
			}, t2)
			b.mustNil("QueryTransition queued -> executing", err)
			want.Status, want.WorkerID, want.UpdatedAt = api.QueryExecuting, "warehouse-worker", t2
			b.wantQuery("query after a transition without metric fields", got, want)
			got, err = b.transition(q.QueryUUID, []api.QueryStatus{api.QueryExecuting}, api.QueryError, store.QueryUpdate{
				PreAggregate: json.RawMessage{},
			}, t2)
			b.mustNil("QueryTransition executing -> error", err)
			want.Status, want.PreAggregate = api.QueryError, nil
			b.wantQuery("query after an empty PreAggregate", got, want)
		}},
		{"InsertDefaults", func(b *bundle) {
			q := store.Query{QueryUUID: "minimal", ProjectID: b.ids.Next(), SQL: "SELECT 1", CreatedAt: b.now}
			want := q
			want.Status, want.UpdatedAt = api.QueryPending, b.now
			b.wantQuery("query inserted with only uuid, project, sql and CreatedAt", b.addQuery(q), want)

			empty := b.newQuery(q.ProjectID, b.now)
			empty.Columns = json.RawMessage{}
			want = empty
			want.Columns = nil
			b.wantQuery("query inserted with empty Columns (stored NULL)", b.addQuery(empty), want)

			zero := b.newQuery(q.ProjectID, time.Time{})
			before := time.Now().UTC().Truncate(time.Microsecond)
			got := b.addQuery(zero)
			after := time.Now().UTC()
			if got.CreatedAt.Before(before) || got.CreatedAt.After(after) || !got.UpdatedAt.Equal(got.CreatedAt) {
				b.fatalf("QueryInsert with zero times stored CreatedAt %s, UpdatedAt %s; want the insert time (between %s and %s) for both",
					got.CreatedAt, got.UpdatedAt, before, after)
			}
		}},
		{"InsertDuplicateIsConflict", func(b *bundle) {
			q := b.addQuery(b.newQuery(b.ids.Next(), b.now))
			dup := q
			dup.SQL, dup.Status = "DROP TABLE customers", api.QueryReady
			b.wantErr("QueryInsert of an existing uuid", b.insertQuery(dup), store.ErrConflict)
			b.wantQuery("query after the rejected duplicate", b.getQuery(q.QueryUUID), q)
		}},
		{"InsertUnknownStatusIsError", func(b *bundle) {
			q := b.newQuery(b.ids.Next(), b.now)
			q.Status = "done"
			if err := b.insertQuery(q); err == nil {
				b.fatalf("QueryInsert with status %q succeeded, want an error", q.Status)
			}
		}},
		{"GetMissing", func(b *bundle) {
			_, err := readQ(b, func(q store.QueryQuerier) (store.Query, error) { return q.QueryGet(b.ctx(), "nope") })
			b.wantErr("QueryGet of an unknown uuid", err, store.ErrNotFound)
		}},
		{"ListNewestFirstWithTotal", func(b *bundle) {
			project, other := b.ids.Next(), b.ids.Next()
			if list, total := b.listQueries(project, 0, 10); len(list) != 0 || total != 0 {
				b.fatalf("QueryList of an empty project = %d rows, total %d; want none, 0", len(list), total)
			}
			var qs []store.Query
			for i := range 5 {
				qs = append(qs, b.addQuery(b.newQuery(project, b.now.Add(time.Duration(i)*time.Second))))
			}
			// Same microsecond as the newest: the uuid breaks the tie, the
			// larger first.
			tie := b.newQuery(project, qs[4].CreatedAt)
			qs = append(qs, b.addQuery(tie))
			b.addQuery(b.newQuery(other, b.now.Add(time.Hour)))
			newest := uuidsOf(qs[5], qs[4], qs[3], qs[2], qs[1], qs[0])

			list, total := b.listQueries(project, 0, 2)
			if total != 6 {
				b.fatalf("QueryList total = %d, want 6 (the other project's query does not count)", total)
			}
			b.wantQueryUUIDs("QueryList first page", list, newest[:2]...)
			b.wantQuery("QueryList[0]", list[0], qs[5])
			list, _ = b.listQueries(project, 2, 2)
			b.wantQueryUUIDs("QueryList second page", list, newest[2:4]...)
			list, _ = b.listQueries(project, 5, 2)
			b.wantQueryUUIDs("QueryList last, short page", list, newest[5:]...)
			list, _ = b.listQueries(project, 6, 2)
			b.wantQueryUUIDs("QueryList past the end", list)
			list, _ = b.listQueries(project, 0, 0)
			b.wantQueryUUIDs("QueryList with limit 0 (all)", list, newest...)
		}},
		{"Cached", func(b *bundle) {
			project, other := b.ids.Next(), b.ids.Next()
			const key = "sha256:feed"
			ready := func(p int64, k string, created, expires time.Time, hit bool) store.Query {
				q := b.newQuery(p, created)
				q.CacheKey, q.CacheHit, q.Status = k, hit, api.QueryReady
				q.Columns, q.ResultKey, q.ExpiresAt = jsonColumns, "results/"+q.QueryUUID, ptr(expires)
				return b.addQuery(q)
			}
			older := ready(project, key, b.now.Add(-2*time.Minute), b.now.Add(2*time.Hour), false)
			newer := ready(project, key, b.now.Add(-time.Minute), b.now.Add(time.Hour), false)
			// Newer still, but none of these may serve the cache: a cache
			// hit (it shares another's result), an expired result, another
			// project, another key, and queries not ready.
			ready(project, key, b.now, b.now.Add(3*time.Hour), true)
			ready(project, key, b.now.Add(-30*time.Second), b.now, false)
			ready(other, key, b.now, b.now.Add(3*time.Hour), false)
			ready(project, "sha256:other", b.now, b.now.Add(3*time.Hour), false)
			for _, status := range []api.QueryStatus{api.QueryPending, api.QueryExecuting, api.QueryError, api.QueryExpired} {
				q := b.newQuery(project, b.now)
				q.CacheKey, q.Status, q.ExpiresAt = key, status, ptr(b.now.Add(3*time.Hour))
				b.addQuery(q)
			}
			noExpiry := b.newQuery(project, b.now)
			noExpiry.CacheKey, noExpiry.Status = key, api.QueryReady
			b.addQuery(noExpiry)

			got, err := b.cached(project, key, b.now)
			b.mustNil("QueryCached", err)
			b.wantQuery("QueryCached: the newest live ready query", got, newer)
			// At its ExpiresAt the newer one is stale (expires_at > now).
			got, err = b.cached(project, key, b.now.Add(time.Hour))
			b.mustNil("QueryCached at the newer result's expiry", err)
			b.wantQuery("QueryCached once the newer result expired", got, older)
			_, err = b.cached(project, key, b.now.Add(2*time.Hour))
			b.wantErr("QueryCached after every result expired", err, store.ErrNotFound)
			_, err = b.cached(project, "sha256:none", b.now)
			b.wantErr("QueryCached of an unknown key", err, store.ErrNotFound)
			_, err = b.cached(project, "", b.now)
			b.wantErr("QueryCached with an empty key", err, store.ErrNotFound)
		}},
		{"QueuedBefore", func(b *bundle) {
			project := b.ids.Next()
			add := func(status api.QueryStatus, published *time.Time) store.Query {
				q := b.newQuery(project, b.now.Add(-time.Hour))
				q.Status, q.PublishedAt, q.Publishes = status, published, 1
				return b.addQuery(q)
			}
			// Created in another order than published, so the order by
			// PublishedAt is visible.
			late := add(api.QueryQueued, ptr(b.now.Add(-time.Second)))
			early := add(api.QueryQueued, ptr(b.now.Add(-3*time.Second)))
			atBound := add(api.QueryQueued, ptr(b.now))
			add(api.QueryQueued, ptr(b.now.Add(time.Microsecond)))
			add(api.QueryQueued, nil)
			add(api.QueryPending, ptr(b.now.Add(-5*time.Second)))
			add(api.QueryExecuting, ptr(b.now.Add(-5*time.Second)))

			b.wantQueryUUIDs("QueriesQueuedBefore now", b.queuedBefore(b.now, 10), uuidsOf(early, late, atBound)...)
			b.wantQueryUUIDs("QueriesQueuedBefore limit 2", b.queuedBefore(b.now, 2), uuidsOf(early, late)...)
			b.wantQueryUUIDs("QueriesQueuedBefore limit 0 (all)", b.queuedBefore(b.now, 0), uuidsOf(early, late, atBound)...)
			b.wantQueryUUIDs("QueriesQueuedBefore 2s ago", b.queuedBefore(b.now.Add(-2*time.Second), 10), uuidsOf(early)...)
			b.wantQuery("QueriesQueuedBefore row", b.queuedBefore(b.now, 1)[0], early)
		}},
		{"CreatedBefore", func(b *bundle) {
			project := b.ids.Next()
			add := func(status api.QueryStatus, created time.Time) store.Query {
				q := b.newQuery(project, created)
				q.Status = status
				return b.addQuery(q)
			}
			// Inserted newest first, so the oldest-first order is the
			// driver's doing.
			atBound := add(api.QueryQueued, b.now)
			mid := add(api.QueryPending, b.now.Add(-time.Minute))
			oldest := add(api.QueryQueued, b.now.Add(-2*time.Minute))
			add(api.QueryQueued, b.now.Add(time.Microsecond))
			add(api.QueryExecuting, b.now.Add(-3*time.Minute))
			add(api.QueryReady, b.now.Add(-3*time.Minute))

			waiting := []api.QueryStatus{api.QueryPending, api.QueryQueued}
			b.wantQueryUUIDs("QueriesCreatedBefore pending/queued", b.createdBefore(waiting, b.now, 10), uuidsOf(oldest, mid, atBound)...)
			b.wantQueryUUIDs("QueriesCreatedBefore limit 1", b.createdBefore(waiting, b.now, 1), uuidsOf(oldest)...)
			b.wantQueryUUIDs("QueriesCreatedBefore limit 0 (all)", b.createdBefore(waiting, b.now, 0), uuidsOf(oldest, mid, atBound)...)
			b.wantQueryUUIDs("QueriesCreatedBefore queued only", b.createdBefore([]api.QueryStatus{api.QueryQueued}, b.now, 10), uuidsOf(oldest, atBound)...)
			b.wantQueryUUIDs("QueriesCreatedBefore no statuses", b.createdBefore(nil, b.now, 10))
			b.wantQuery("QueriesCreatedBefore row", b.createdBefore(waiting, b.now, 1)[0], oldest)
		}},
		{"QueueStats", func(b *bundle) {
			if s := b.queueStats(); s.Queued != 0 || s.OldestQueued != nil || s.Executing != 0 {
				b.fatalf("QueueStats of an empty store = %+v, want zeros and no OldestQueued", s)
			}
			project := b.ids.Next()
			for i, status := range []api.QueryStatus{api.QueryQueued, api.QueryQueued, api.QueryExecuting,
				api.QueryPending, api.QueryReady, api.QueryCancelled} {
				q := b.newQuery(project, b.now.Add(time.Duration(i-10)*time.Second))
				q.Status = status
				b.addQuery(q)
			}
			s := b.queueStats()
			var d diff
			d.eq("Queued", s.Queued, int64(2))
			d.timePtr("OldestQueued", s.OldestQueued, ptr(b.now.Add(-10*time.Second)))
			d.eq("Executing", s.Executing, int64(1))
			b.check("QueueStats", d)
		}},
		{"TransitionSetsOnlyGivenFields", func(b *bundle) {
			q := b.addQuery(b.newQuery(b.ids.Next(), b.now))
			t1, t2 := b.now.Add(time.Second), b.now.Add(2*time.Second)
			got, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryPending, api.QueryQueued}, api.QueryExecuting,
				store.QueryUpdate{WorkerID: ptr("worker-1"), StartedAt: ptr(t1)}, t1)
			b.mustNil("QueryTransition pending -> executing", err)
			want := q
			want.Status, want.WorkerID, want.StartedAt, want.UpdatedAt = api.QueryExecuting, "worker-1", ptr(t1), t1
			b.wantQuery("QueryTransition result", got, want)
			b.wantQuery("query after pending -> executing", b.getQuery(q.QueryUUID), want)

			got, err = b.transition(q.QueryUUID, []api.QueryStatus{api.QueryExecuting}, api.QueryReady, store.QueryUpdate{
				Columns: jsonColumns, TotalRows: ptr(int64(42)), ResultKey: ptr("results/x"),
				EndedAt: ptr(t2), ExpiresAt: ptr(t2.Add(time.Hour)),
			}, t2)
			b.mustNil("QueryTransition executing -> ready", err)
			want.Status, want.Columns, want.TotalRows, want.ResultKey = api.QueryReady, jsonColumns, 42, "results/x"
			want.EndedAt, want.ExpiresAt, want.UpdatedAt = ptr(t2), ptr(t2.Add(time.Hour)), t2
			b.wantQuery("query after executing -> ready (worker and start kept)", b.getQuery(q.QueryUUID), want)
			b.wantQuery("QueryTransition result", got, want)

			// Every field at once, and a non-nil empty Columns clears them.
			t3 := b.now.Add(3 * time.Second)
			got, err = b.transition(q.QueryUUID, []api.QueryStatus{api.QueryReady}, api.QueryExpired, store.QueryUpdate{
				Error: ptr("result evicted"), Columns: json.RawMessage{}, TotalRows: ptr(int64(0)), ResultKey: ptr(""),
				WorkerID: ptr("reaper"), PublishedAt: ptr(t3), StartedAt: ptr(t3), EndedAt: ptr(t3), ExpiresAt: ptr(t3),
			}, t3)
			b.mustNil("QueryTransition ready -> expired", err)
			want = store.Query{
				QueryUUID: q.QueryUUID, ProjectID: q.ProjectID, SQL: q.SQL, Lane: q.Lane, CacheKey: q.CacheKey,
				Status: api.QueryExpired, Error: "result evicted", WorkerID: "reaper",
				PublishedAt: ptr(t3), CreatedAt: q.CreatedAt, StartedAt: ptr(t3), EndedAt: ptr(t3), ExpiresAt: ptr(t3), UpdatedAt: t3,
			}
			b.wantQuery("query after a transition setting every field", got, want)
			b.wantQuery("stored query after a transition setting every field", b.getQuery(q.QueryUUID), want)
		}},
		{"TransitionConflictReturnsCurrentRow", func(b *bundle) {
			q := b.newQuery(b.ids.Next(), b.now)
			q.Status, q.Columns, q.ExpiresAt = api.QueryReady, jsonColumns, ptr(b.now.Add(time.Hour))
			q = b.addQuery(q)
			got, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryPending, api.QueryQueued}, api.QueryExecuting,
				store.QueryUpdate{WorkerID: ptr("late")}, b.now.Add(time.Minute))
			b.wantErr("QueryTransition from the wrong status", err, store.ErrConflict)
			b.wantQuery("row returned with ErrConflict", got, q)
			b.wantQuery("query after the refused transition", b.getQuery(q.QueryUUID), q)
		}},
		{"TransitionMissing", func(b *bundle) {
			_, err := b.transition("nope", []api.QueryStatus{api.QueryPending}, api.QueryExecuting, store.QueryUpdate{}, b.now)
			b.wantErr("QueryTransition of an unknown uuid", err, store.ErrNotFound)
		}},
		{"TransitionUnknownStatusIsError", func(b *bundle) {
			q := b.addQuery(b.newQuery(b.ids.Next(), b.now))
			for _, tc := range []struct {
				from []api.QueryStatus
				to   api.QueryStatus
			}{
				{[]api.QueryStatus{api.QueryPending}, "done"},
				{[]api.QueryStatus{"waiting"}, api.QueryExecuting},
				{nil, api.QueryExecuting},
			} {
				_, err := b.transition(q.QueryUUID, tc.from, tc.to, store.QueryUpdate{}, b.now.Add(time.Minute))
				if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
					b.fatalf("QueryTransition %v -> %q = %v, want a plain error", tc.from, tc.to, err)
				}
			}
			b.wantQuery("query after invalid transitions", b.getQuery(q.QueryUUID), q)
		}},
		{"TransitionRace", func(b *bundle) {
			q := b.addQuery(b.newQuery(b.ids.Next(), b.now))
			// Half the racers start it (a worker), half cancel it (a user):
			// whichever commits first wins and every other sees the result.
			type outcome struct {
				to  api.QueryStatus
				got store.Query
				err error
			}
			outs := make([]outcome, transitionRacers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range transitionRacers {
				to, upd := api.QueryExecuting, store.QueryUpdate{WorkerID: ptr(fmt.Sprintf("worker-%d", i))}
				if i%2 == 1 {
					to, upd = api.QueryCancelled, store.QueryUpdate{EndedAt: ptr(b.now)}
				}
				outs[i].to = to
				wg.Go(func() {
					<-start
					outs[i].err = b.write(func(tx store.Tx) error {
						qt, ok := tx.(store.QueryTx)
						if !ok {
							return fmt.Errorf("%T does not implement store.QueryTx", tx)
						}
						var err error
						outs[i].got, err = qt.QueryTransition(b.ctx(), q.QueryUUID, []api.QueryStatus{api.QueryPending}, to, upd, b.now)
						return err
					})
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, o := range outs {
				switch {
				case o.err == nil && winner >= 0:
					b.fatalf("racers %d and %d both moved the query out of pending", winner, i)
				case o.err == nil:
					winner = i
				case !errors.Is(o.err, store.ErrConflict):
					b.fatalf("racer %d got %v, want ErrConflict", i, o.err)
				}
			}
			if winner < 0 {
				b.fatalf("no racer among %d moved the query", transitionRacers)
			}
			final := b.getQuery(q.QueryUUID)
			b.wantQuery("query after the race", final, outs[winner].got)
			if final.Status != outs[winner].to {
				b.fatalf("query status after the race = %s, want the winner's %s", final.Status, outs[winner].to)
			}
			for i, o := range outs {
				if i != winner && o.got.Status != final.Status {
					b.fatalf("racer %d got ErrConflict with a row in status %q, want the winner's %q", i, o.got.Status, final.Status)
				}
			}
		}},
		{"LateResultAfterCancel", func(b *bundle) {
			q := b.addQuery(b.newQuery(b.ids.Next(), b.now))
			t1, t2, t3 := b.now.Add(time.Second), b.now.Add(2*time.Second), b.now.Add(3*time.Second)
			_, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryPending}, api.QueryExecuting,
				store.QueryUpdate{WorkerID: ptr("worker-1"), StartedAt: ptr(t1)}, t1)
			b.mustNil("QueryTransition pending -> executing", err)
			cancelled, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryPending, api.QueryQueued, api.QueryExecuting},
				api.QueryCancelled, store.QueryUpdate{EndedAt: ptr(t2)}, t2)
			b.mustNil("QueryTransition executing -> cancelled", err)
			// The worker finishes after the user cancelled: its result must
			// not overwrite the cancel.
			got, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryExecuting}, api.QueryReady, store.QueryUpdate{
				Columns: jsonColumns, TotalRows: ptr(int64(7)), ResultKey: ptr("results/late"), EndedAt: ptr(t3),
			}, t3)
			b.wantErr("QueryTransition executing -> ready after a cancel", err, store.ErrConflict)
			b.wantQuery("row returned to the late worker", got, cancelled)
			final := b.getQuery(q.QueryUUID)
			b.wantQuery("query after a late result", final, cancelled)
			if final.Status != api.QueryCancelled || final.Columns != nil || final.ResultKey != "" {
				b.fatalf("query after a late result: status %s, columns %q, result key %q; want cancelled with no result",
					final.Status, final.Columns, final.ResultKey)
			}
		}},
		{"MarkRepublished", func(b *bundle) {
			q := b.newQuery(b.ids.Next(), b.now.Add(-time.Minute))
			q.Status, q.Publishes, q.PublishedAt = api.QueryQueued, 1, ptr(b.now.Add(-time.Minute))
			q = b.addQuery(q)
			b.wantQueryUUIDs("QueriesQueuedBefore with a lost notification", b.queuedBefore(b.now.Add(-time.Second), 10), q.QueryUUID)
			got, err := writeQ(b, func(tx store.QueryTx) (store.Query, error) {
				return tx.QueryMarkRepublished(b.ctx(), q.QueryUUID, b.now)
			})
			b.mustNil("QueryMarkRepublished", err)
			want := q
			want.Publishes, want.PublishedAt = 2, ptr(b.now)
			want.UpdatedAt = got.UpdatedAt // the contract leaves it open
			b.wantQuery("QueryMarkRepublished result", got, want)
			b.wantQuery("query after QueryMarkRepublished", b.getQuery(q.QueryUUID), want)
			b.wantQueryUUIDs("QueriesQueuedBefore after the re-notification", b.queuedBefore(b.now.Add(-time.Second), 10))
			_, err = writeQ(b, func(tx store.QueryTx) (store.Query, error) {
				return tx.QueryMarkRepublished(b.ctx(), "nope", b.now)
			})
			b.wantErr("QueryMarkRepublished of an unknown uuid", err, store.ErrNotFound)
		}},
		{"RolledBackWithSavepoint", func(b *bundle) {
			// Store.Do gives each caller a savepoint: a failed caller's
			// query and transition must vanish while another's stay.
			kept, dropped := b.newQuery(b.ids.Next(), b.now), b.newQuery(b.ids.Next(), b.now)
			b.mustWrite("two callers in one transaction", func(tx store.Tx) error {
				qt := b.queryWrites(tx)
				if err := qt.QueryInsert(b.ctx(), kept); err != nil {
					return err
				}
				if err := tx.Savepoint(b.ctx(), "caller_2"); err != nil {
					return err
				}
				if err := qt.QueryInsert(b.ctx(), dropped); err != nil {
					return err
				}
				if _, err := qt.QueryTransition(b.ctx(), kept.QueryUUID, []api.QueryStatus{api.QueryPending}, api.QueryCancelled,
					store.QueryUpdate{}, b.now); err != nil {
					return err
				}
				return tx.RollbackTo(b.ctx(), "caller_2")
			})
			b.wantQuery("query inserted before the savepoint", b.getQuery(kept.QueryUUID), kept)
			_, err := readQ(b, func(q store.QueryQuerier) (store.Query, error) { return q.QueryGet(b.ctx(), dropped.QueryUUID) })
			b.wantErr("QueryGet of a query rolled back to the savepoint", err, store.ErrNotFound)
		}},
		{"MicrosecondUTC", func(b *bundle) {
			t1, w1 := ragged(0)
			t2, w2 := ragged(time.Hour)
			t3, w3 := ragged(2 * time.Hour)
			q := b.newQuery(b.ids.Next(), t1)
			q.Status, q.PublishedAt, q.UpdatedAt = api.QueryQueued, &t1, t1
			b.mustNil("QueryInsert", b.insertQuery(q))
			var d diff
			got := b.getQuery(q.QueryUUID)
			d.time("CreatedAt", got.CreatedAt, w1)
			d.time("UpdatedAt", got.UpdatedAt, w1)
			d.timePtr("PublishedAt", got.PublishedAt, &w1)
			// The truncated PublishedAt is exactly the threshold.
			b.wantQueryUUIDs("QueriesQueuedBefore the truncated PublishedAt", b.queuedBefore(w1, 10), q.QueryUUID)
			b.wantQueryUUIDs("QueriesCreatedBefore the truncated CreatedAt", b.createdBefore([]api.QueryStatus{api.QueryQueued}, w1, 10), q.QueryUUID)

			got, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryQueued}, api.QueryReady, store.QueryUpdate{
				StartedAt: &t2, EndedAt: &t2, ExpiresAt: &t3,
			}, t2)
			b.mustNil("QueryTransition", err)
			d.time("transition result UpdatedAt", got.UpdatedAt, w2)
			d.timePtr("transition result StartedAt", got.StartedAt, &w2)
			d.timePtr("transition result EndedAt", got.EndedAt, &w2)
			d.timePtr("transition result ExpiresAt", got.ExpiresAt, &w3)
			rep, err := writeQ(b, func(tx store.QueryTx) (store.Query, error) {
				return tx.QueryMarkRepublished(b.ctx(), q.QueryUUID, t3)
			})
			b.mustNil("QueryMarkRepublished", err)
			d.timePtr("QueryMarkRepublished result PublishedAt", rep.PublishedAt, &w3)
			// Still fresh 1µs before the truncated expiry, stale at it.
			_, err = b.cached(q.ProjectID, q.CacheKey, w3.Add(-time.Microsecond))
			b.mustNil("QueryCached just before the truncated ExpiresAt", err)
			_, err = b.cached(q.ProjectID, q.CacheKey, w3)
			b.wantErr("QueryCached at the truncated ExpiresAt", err, store.ErrNotFound)

			stored := b.getQuery(q.QueryUUID)
			d.timePtr("stored StartedAt", stored.StartedAt, &w2)
			d.timePtr("stored ExpiresAt", stored.ExpiresAt, &w3)
			d.timePtr("stored PublishedAt", stored.PublishedAt, &w3)
			b.check("query times must come back in UTC, truncated to the microsecond", d)
		}},
	}
}
