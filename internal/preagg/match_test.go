package preagg

import (
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

// testModel is the model the unit tests match against.
func testModel() *semantic.Model {
	return &semantic.Model{
		Name:  "orders",
		Table: "orders",
		Dimensions: []semantic.Dimension{
			{Name: "status", Type: semantic.DimString},
			{Name: "country", Type: semantic.DimString},
			{Name: "channel", Type: semantic.DimString},
			{Name: "is_gift", Type: semantic.DimBoolean},
			{Name: "priority", Type: semantic.DimNumber},
			{Name: "created_at", Type: semantic.DimTimestamp},
			{Name: "ship_date", Type: semantic.DimDate},
		},
		Metrics: []semantic.Metric{
			{Name: "order_count", Type: semantic.MetricCount},
			{Name: "amount_sum", Type: semantic.MetricSum, SQL: "amount"},
			{Name: "amount_avg", Type: semantic.MetricAverage, SQL: "amount"},
			{Name: "amount_min", Type: semantic.MetricMin, SQL: "amount"},
			{Name: "amount_max", Type: semantic.MetricMax, SQL: "amount"},
			{Name: "customers", Type: semantic.MetricCountDistinct, SQL: "customer_id"},
			{Name: "amount_median", Type: semantic.MetricMedian, SQL: "amount"},
		},
		PreAggregates: []semantic.PreAggregate{
			{Name: "by_day", Dimensions: []string{"status", "country"}, Metrics: []string{"order_count", "amount_sum", "amount_avg", "amount_min", "amount_max"}, TimeDimension: "created_at", Granularity: semantic.GrainDay},
			{Name: "by_week", Dimensions: []string{"status"}, Metrics: []string{"order_count", "amount_sum"}, TimeDimension: "created_at", Granularity: semantic.GrainWeek},
			{Name: "exact", Dimensions: []string{"country"}, Metrics: []string{"customers", "amount_median", "order_count"}, TimeDimension: "created_at", Granularity: semantic.GrainMonth},
			{Name: "complete_only", Dimensions: []string{"country"}, Metrics: []string{"amount_sum"}, TimeDimension: "created_at", Granularity: semantic.GrainDay,
				Filters: []semantic.FilterRule{{Target: semantic.FilterTarget{FieldID: "orders_status"}, Operator: semantic.OpEquals, Values: []any{"complete", "shipped"}}}},
		},
	}
}

// only is m with just the named pre-aggregates.
func only(m *semantic.Model, names ...string) *semantic.Model {
	c := *m
	c.PreAggregates = nil
	for _, p := range m.PreAggregates {
		for _, n := range names {
			if p.Name == n {
				c.PreAggregates = append(c.PreAggregates, p)
			}
		}
	}
	return &c
}

// activeAll is an active, current build for every pre-aggregate of m,
// with rows in declaration order times 100 (so the first is smallest).
func activeAll(m *semantic.Model, now time.Time) map[string]ActiveBuild {
	out := map[string]ActiveBuild{}
	for i := range m.PreAggregates {
		p := &m.PreAggregates[i]
		out[p.Name] = ActiveBuild{BuildUUID: "b-" + p.Name, DefHash: defHash(m, p), Rows: int64(100 * (i + 1)), BuiltAt: now, DataAsOf: now}
	}
	return out
}

// qb builds a Resolved from field ids: dimensions by "<name>[_<grain>]",
// metrics by name.
type qb struct {
	r *semantic.Resolved
}

func query(m *semantic.Model) *qb { return &qb{r: &semantic.Resolved{Model: m, Limit: 500}} }

func (b *qb) dims(ids ...string) *qb {
	for _, id := range ids {
		f, ok := lookupDim(b.r.Model, id)
		if !ok {
			panic("no dimension " + id)
		}
		b.r.Dimensions = append(b.r.Dimensions, f)
	}
	return b
}

func metricField(m *semantic.Model, name string) semantic.Field {
	for i := range m.Metrics {
		if m.Metrics[i].Name == name {
			return semantic.Field{ID: semantic.FieldID(m.Name, name, ""), Metric: &m.Metrics[i]}
		}
	}
	panic("no metric " + name)
}

func (b *qb) metrics(names ...string) *qb {
	for _, n := range names {
		b.r.Metrics = append(b.r.Metrics, metricField(b.r.Model, n))
	}
	return b
}

func rule(m *semantic.Model, id string, op semantic.FilterOperator, vals ...any) *semantic.Cond {
	f, ok := lookupDim(m, id)
	if !ok {
		f = metricField(m, id)
	}
	return &semantic.Cond{Rule: &semantic.Rule{Field: f, Operator: op, Values: vals}}
}

func (b *qb) where(cs ...*semantic.Cond) *qb {
	b.r.Where = &semantic.Cond{Items: cs}
	return b
}

func (b *qb) having(cs ...*semantic.Cond) *qb {
	b.r.Having = &semantic.Cond{Items: cs}
	return b
}

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func day(s string) time.Time {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		panic(err)
	}
	return t
}

func expectHit(t *testing.T, d Decision, name string) {
	t.Helper()
	if !d.Hit {
		t.Fatalf("want a hit on %s, got a miss: %+v", name, d.Reason)
	}
	if d.PreAgg.Name != name {
		t.Fatalf("want a hit on %s, got one on %s", name, d.PreAgg.Name)
	}
}

func expectMiss(t *testing.T, d Decision, code, preagg, fieldID string) {
	t.Helper()
	if d.Hit {
		t.Fatalf("want a miss %s, got a hit on %s", code, d.PreAgg.Name)
	}
	if d.Reason == nil || d.Reason.Code != code || d.Reason.PreAggregate != preagg || d.Reason.FieldID != fieldID {
		t.Fatalf("want miss %s on %q (field %q), got %+v", code, preagg, fieldID, d.Reason)
	}
	if d.Reason.Message == "" {
		t.Fatalf("miss %s has no message", code)
	}
}

func TestMatchGrains(t *testing.T) {
	t.Parallel()
	m := testModel()
	act := activeAll(m, now)
	// Day serves week, month, quarter, year.
	for _, g := range []string{"day", "week", "month", "quarter", "year"} {
		expectHit(t, Match(query(m).dims("status", "created_at_"+g).metrics("order_count").r, act, true, now), "by_day")
	}
	// Hour is finer than any pre-aggregate.
	expectMiss(t, Match(query(m).dims("status", "created_at_hour").metrics("order_count").r, act, true, now),
		api.PreAggMissGrain, "by_day", "orders_created_at_hour")
	// The raw time value is never derivable from buckets.
	expectMiss(t, Match(query(m).dims("created_at").metrics("order_count").r, act, true, now),
		api.PreAggMissGrain, "by_day", "orders_created_at")

	// A date's raw value is its day: served from day buckets, any filter
	// on it too; not from weeks.
	dm := testModel()
	dm.PreAggregates = []semantic.PreAggregate{
		{Name: "ship_day", Dimensions: []string{"status"}, Metrics: []string{"order_count", "customers"}, TimeDimension: "ship_date", Granularity: semantic.GrainDay},
		{Name: "ship_week", Dimensions: []string{"status"}, Metrics: []string{"order_count"}, TimeDimension: "ship_date", Granularity: semantic.GrainWeek},
	}
	dact := activeAll(dm, now)
	expectHit(t, Match(query(dm).dims("ship_date").metrics("order_count").r, dact, true, now), "ship_day")
	expectHit(t, Match(query(dm).dims("status").metrics("order_count").where(rule(dm, "ship_date", semantic.OpEquals, day("2024-03-05"))).r, dact, true, now), "ship_day")
	expectHit(t, Match(query(dm).dims("status", "ship_date").metrics("customers").r, dact, true, now), "ship_day") // exact: raw date = day
	dm = only(dm, "ship_week")
	expectHit(t, Match(query(dm).dims("status").metrics("order_count").where(rule(dm, "ship_date", semantic.OpGreaterThanOrEqual, day("2024-03-04"))).r, activeAll(dm, now), true, now), "ship_week")
	expectMiss(t, Match(query(dm).dims("ship_date").metrics("order_count").r, activeAll(dm, now), true, now), api.PreAggMissGrain, "ship_week", "orders_ship_date")
	expectMiss(t, Match(query(dm).dims("status").metrics("order_count").where(rule(dm, "ship_date", semantic.OpEquals, day("2024-03-04"))).r, activeAll(dm, now), true, now), api.PreAggMissGrain, "ship_week", "orders_ship_date")
}

func TestMatchWeekNeverServesMonth(t *testing.T) {
	t.Parallel()
	m := testModel()
	// Only the week pre-aggregate is built: weeks serve weeks, never months,
	// quarters or years (Lightdash #27537).
	m = only(m, "by_week")
	act := activeAll(m, now)
	expectHit(t, Match(query(m).dims("created_at_week").metrics("amount_sum").r, act, true, now), "by_week")
	for _, g := range []string{"month", "quarter", "year"} {
		d := Match(query(m).dims("status", "created_at_"+g).metrics("amount_sum").r, act, true, now)
		expectMiss(t, d, api.PreAggMissGrain, "by_week", "orders_created_at_"+g)
		if !strings.Contains(d.Reason.Message, "straddles") {
			t.Errorf("message does not say why: %s", d.Reason.Message)
		}
	}
	// A filter on the month of a week bucket is not derivable either.
	expectMiss(t, Match(query(m).dims("status").metrics("amount_sum").where(rule(m, "created_at_month", semantic.OpEquals, day("2024-03-01"))).r, act, true, now),
		api.PreAggMissGrain, "by_week", "orders_created_at_month")
	// The week of a day bucket is.
	m = testModel()
	act = activeAll(m, now)
	expectHit(t, Match(query(m).dims("status").metrics("amount_sum").where(rule(m, "created_at_week", semantic.OpGreaterThanOrEqual, day("2024-03-04"))).r, act, true, now), "by_day")
}

func TestMatchRawTimeFilters(t *testing.T) {
	t.Parallel()
	m := testModel()
	act := activeAll(m, now)
	q := func(c *semantic.Cond) *semantic.Resolved {
		return query(m).dims("status").metrics("amount_sum").where(c).r
	}
	// On a bucket boundary, >= and < are exact; isNull/notNull too.
	expectHit(t, Match(q(rule(m, "created_at", semantic.OpGreaterThanOrEqual, day("2024-03-05"))), act, true, now), "by_day")
	expectHit(t, Match(q(rule(m, "created_at", semantic.OpLessThan, day("2024-03-05"))), act, true, now), "by_day")
	expectHit(t, Match(q(rule(m, "created_at", semantic.OpNotNull)), act, true, now), "by_day")
	// Off a boundary, or with an operator that needs row-level time: miss.
	for _, c := range []*semantic.Cond{
		rule(m, "created_at", semantic.OpGreaterThanOrEqual, day("2024-03-05").Add(time.Hour)),
		rule(m, "created_at", semantic.OpGreaterThan, day("2024-03-05")),
		rule(m, "created_at", semantic.OpLessThanOrEqual, day("2024-03-05")),
		rule(m, "created_at", semantic.OpEquals, day("2024-03-05")),
		rule(m, "created_at", semantic.OpInBetween, day("2024-03-05"), day("2024-03-09")),
	} {
		expectMiss(t, Match(q(c), act, true, now), api.PreAggMissGrain, "by_day", "orders_created_at")
	}
	// On the week pre-aggregate, a day boundary that is not a Monday is off.
	m = only(m, "by_week")
	act = activeAll(m, now)
	expectHit(t, Match(q(rule(m, "created_at", semantic.OpGreaterThanOrEqual, day("2024-03-04"))), act, true, now), "by_week")
	expectMiss(t, Match(q(rule(m, "created_at", semantic.OpGreaterThanOrEqual, day("2024-03-05"))), act, true, now), api.PreAggMissGrain, "by_week", "orders_created_at")
}

func TestMatchNonAdditiveNeedsExactMatch(t *testing.T) {
	t.Parallel()
	m := testModel()
	act := activeAll(m, now)
	for _, met := range []string{"customers", "amount_median"} {
		// Exactly its dimensions at its grain: hit.
		expectHit(t, Match(query(m).dims("country", "created_at_month").metrics(met, "order_count").r, act, true, now), "exact")
		expectHit(t, Match(query(m).dims("created_at_month", "country").metrics(met).where(rule(m, "country", semantic.OpEquals, "FR")).r, act, true, now), "exact")
		// Fewer dimensions, a coarser grain: the distinct values would be
		// counted twice.
		expectMiss(t, Match(query(m).dims("created_at_month").metrics(met).r, act, true, now), api.PreAggMissNonAdditive, "exact", "orders_"+met)
		expectMiss(t, Match(query(m).dims("country", "created_at_year").metrics(met).r, act, true, now), api.PreAggMissNonAdditive, "exact", "orders_"+met)
		expectMiss(t, Match(query(m).metrics(met).r, act, true, now), api.PreAggMissNonAdditive, "exact", "orders_"+met)
	}
	// Additive metrics of the same pre-aggregate re-aggregate fine.
	expectHit(t, Match(query(m).dims("created_at_year").metrics("order_count").r, act, true, now), "by_day")
	// A non-additive metric in HAVING needs the exact match too.
	expectMiss(t, Match(query(m).dims("created_at_year").metrics("order_count").having(rule(m, "customers", semantic.OpGreaterThan, 3.0)).r, act, true, now),
		api.PreAggMissNonAdditive, "exact", "orders_customers")
	expectHit(t, Match(query(m).dims("country", "created_at_month").metrics("order_count").having(rule(m, "customers", semantic.OpGreaterThan, 3.0)).r, act, true, now), "exact")
}

func TestMatchScopeFilters(t *testing.T) {
	t.Parallel()
	m := only(testModel(), "complete_only")
	act := activeAll(m, now)
	q := func(cs ...*semantic.Cond) *semantic.Resolved {
		return query(m).dims("country", "created_at_month").metrics("amount_sum").where(cs...).r
	}
	// Equal, or narrower (a subset of the values): hit, even though status
	// itself is not stored (every stored row already passes it).
	expectHit(t, Match(q(rule(m, "status", semantic.OpEquals, "shipped", "complete")), act, true, now), "complete_only")
	// Narrower: the narrowing must be applied, and status is not stored.
	expectMiss(t, Match(q(rule(m, "status", semantic.OpEquals, "complete")), act, true, now),
		api.PreAggMissFieldNotCovered, "complete_only", "orders_status")
	// Stored, it is applied on the stored rows: hit.
	withStatus := only(testModel(), "complete_only")
	withStatus.PreAggregates[0].Dimensions = []string{"country", "status"}
	expectHit(t, Match(query(withStatus).dims("country").metrics("amount_sum").where(rule(withStatus, "status", semantic.OpEquals, "complete")).r, activeAll(withStatus, now), true, now), "complete_only")
	// Wider, absent, another operator class, or only inside an OR: out of scope.
	expectMiss(t, Match(q(rule(m, "status", semantic.OpEquals, "complete", "returned")), act, true, now), api.PreAggMissFieldNotCovered, "complete_only", "orders_status")
	d := Match(q(), act, true, now)
	expectMiss(t, d, api.PreAggMissFilterScope, "complete_only", "orders_status")
	if !strings.Contains(d.Reason.Message, "where orders_status equals complete, shipped;") {
		t.Errorf("scope miss message: %s", d.Reason.Message)
	}
	expectMiss(t, Match(q(rule(m, "country", semantic.OpEquals, "FR")), act, true, now), api.PreAggMissFilterScope, "complete_only", "orders_status")
	or := &semantic.Cond{Or: true, Items: []*semantic.Cond{rule(m, "status", semantic.OpEquals, "complete"), rule(m, "country", semantic.OpEquals, "FR")}}
	expectMiss(t, Match(q(or), act, true, now), api.PreAggMissFieldNotCovered, "complete_only", "orders_status")
	// Nested ANDs count as top-level conjuncts.
	expectHit(t, Match(q(&semantic.Cond{Items: []*semantic.Cond{rule(m, "country", semantic.OpEquals, "FR"), rule(m, "status", semantic.OpEquals, "complete", "shipped")}}), act, true, now), "complete_only")
}

func TestMatchScopeRanges(t *testing.T) {
	t.Parallel()
	m := testModel()
	m.PreAggregates = []semantic.PreAggregate{{Name: "recent_big", Dimensions: []string{"priority", "status"}, Metrics: []string{"amount_sum"}, TimeDimension: "created_at", Granularity: semantic.GrainDay,
		Filters: []semantic.FilterRule{
			{Target: semantic.FilterTarget{FieldID: "priority"}, Operator: semantic.OpGreaterThan, Values: []any{2}},
			{Target: semantic.FilterTarget{FieldID: "created_at"}, Operator: semantic.OpGreaterThanOrEqual, Values: []any{"2024-01-01"}},
		}}}
	act := activeAll(m, now)
	since := rule(m, "created_at", semantic.OpGreaterThanOrEqual, day("2024-01-01"))
	q := func(cs ...*semantic.Cond) *semantic.Resolved {
		return query(m).dims("status").metrics("amount_sum").where(cs...).r
	}
	for _, c := range []*semantic.Cond{
		rule(m, "priority", semantic.OpGreaterThan, 2.0),
		rule(m, "priority", semantic.OpGreaterThan, 3.0),
		rule(m, "priority", semantic.OpGreaterThanOrEqual, 2.5),
		rule(m, "priority", semantic.OpInBetween, 3.0, 4.0),
	} {
		expectHit(t, Match(q(c, since), act, true, now), "recent_big")
	}
	for _, c := range []*semantic.Cond{
		rule(m, "priority", semantic.OpGreaterThanOrEqual, 2.0), // includes 2
		rule(m, "priority", semantic.OpGreaterThan, 1.0),
		rule(m, "priority", semantic.OpLessThan, 4.0),
		rule(m, "priority", semantic.OpInBetween, 2.0, 4.0),
		rule(m, "priority", semantic.OpEquals, 3.0), // another operator class
	} {
		expectMiss(t, Match(q(c, since), act, true, now), api.PreAggMissFilterScope, "recent_big", "orders_priority")
	}
	// A later start is narrower (and on a day boundary, so servable).
	expectHit(t, Match(q(rule(m, "priority", semantic.OpGreaterThan, 2.0), rule(m, "created_at", semantic.OpGreaterThanOrEqual, day("2024-02-01"))), act, true, now), "recent_big")
	expectMiss(t, Match(q(rule(m, "priority", semantic.OpGreaterThan, 2.0), rule(m, "created_at", semantic.OpGreaterThanOrEqual, day("2023-12-01"))), act, true, now),
		api.PreAggMissFilterScope, "recent_big", "orders_created_at")
}

func TestMatchSmallestWins(t *testing.T) {
	t.Parallel()
	m := testModel()
	m.PreAggregates = []semantic.PreAggregate{
		{Name: "b_wide", Dimensions: []string{"status", "country"}, Metrics: []string{"order_count", "amount_sum"}},
		{Name: "a_wide", Dimensions: []string{"status", "country"}, Metrics: []string{"order_count", "amount_sum"}},
		{Name: "narrow", Dimensions: []string{"status"}, Metrics: []string{"order_count", "amount_sum"}},
		{Name: "lean", Dimensions: []string{"status"}, Metrics: []string{"order_count"}},
	}
	q := query(m).dims("status").metrics("order_count").r
	build := func(rows ...int64) map[string]ActiveBuild {
		out := map[string]ActiveBuild{}
		for i, n := range rows {
			p := &m.PreAggregates[i]
			out[p.Name] = ActiveBuild{DefHash: defHash(m, p), Rows: n}
		}
		return out
	}
	expectHit(t, Match(q, build(5, 9, 9, 9), true, now), "b_wide")   // fewest rows
	expectHit(t, Match(q, build(9, 9, 9, 9), true, now), "lean")     // then fewest dimensions, then metrics
	expectHit(t, Match(q, build(9, 9, 10, 10), true, now), "a_wide") // then name
}

func TestMatchMissReasons(t *testing.T) {
	t.Parallel()
	m := testModel()
	act := activeAll(m, now)
	q := query(m).dims("status", "created_at_day").metrics("amount_sum").r

	expectMiss(t, Match(q, act, false, now), api.PreAggMissDisabled, "", "")

	bare := *m
	bare.PreAggregates = nil
	expectMiss(t, Match(query(&bare).dims("status").metrics("amount_sum").r, nil, true, now), api.PreAggMissNone, "", "")

	custom := query(m).dims("status").metrics("amount_sum").r
	custom.Metrics = append(custom.Metrics, semantic.Field{ID: "orders_x", Custom: &semantic.AdditionalMetric{Name: "x", Type: semantic.MetricSum, SQL: "amount * 2"}})
	expectMiss(t, Match(custom, act, true, now), api.PreAggMissCustomSQL, "", "orders_x")

	// by_day lacks channel; every candidate does: the first declared is named.
	expectMiss(t, Match(query(m).dims("channel").metrics("amount_sum").r, act, true, now), api.PreAggMissFieldNotCovered, "by_day", "orders_channel")
	// A filter field counts as a field.
	expectMiss(t, Match(query(m).dims("status").metrics("amount_sum").where(rule(m, "is_gift", semantic.OpEquals, true)).r, act, true, now), api.PreAggMissFieldNotCovered, "by_day", "orders_is_gift")
	// So does a metric filter's metric.
	expectMiss(t, Match(query(m).dims("status").metrics("amount_sum").having(rule(m, "customers", semantic.OpGreaterThan, 1.0)).r, act, true, now), api.PreAggMissFieldNotCovered, "by_day", "orders_customers")

	// No build: by_day passes every query check, so it is named.
	noDay := activeAll(m, now)
	delete(noDay, "by_day")
	expectMiss(t, Match(q, noDay, true, now), api.PreAggMissNoBuild, "by_day", "")
	// A build of an older definition is no build.
	old := activeAll(m, now)
	b := old["by_day"]
	b.DefHash = "old"
	old["by_day"] = b
	expectMiss(t, Match(q, old, true, now), api.PreAggMissNoBuild, "by_day", "")

	// Too stale.
	stale := testModel()
	stale.PreAggregates[0].Refresh.MaxStaleness = semantic.Duration(time.Hour)
	sact := activeAll(stale, now)
	b = sact["by_day"]
	b.DataAsOf = now.Add(-2 * time.Hour)
	sact["by_day"] = b
	expectMiss(t, Match(query(stale).dims("status", "created_at_day").metrics("amount_avg").r, sact, true, now), api.PreAggMissStale, "by_day", "")
	b.DataAsOf = now.Add(-59 * time.Minute)
	sact["by_day"] = b
	expectHit(t, Match(query(stale).dims("status", "created_at_day").metrics("amount_avg").r, sact, true, now), "by_day")
}

func TestMatchMostSpecificReason(t *testing.T) {
	t.Parallel()
	m := testModel()
	act := activeAll(m, now)
	// by_day and by_week lack customers (fields), complete_only too;
	// exact has it but the grain is wrong for a non-additive metric.
	expectMiss(t, Match(query(m).dims("country", "created_at_year").metrics("customers").r, act, true, now), api.PreAggMissNonAdditive, "exact", "orders_customers")
	// With no builds, by_day passes every query check and is named; the
	// others fail earlier (fields, scope).
	expectMiss(t, Match(query(m).dims("country", "created_at_month").metrics("amount_sum").where(rule(m, "country", semantic.OpEquals, "FR")).r,
		map[string]ActiveBuild{}, true, now), api.PreAggMissNoBuild, "by_day", "")
}

func TestDecisionMeta(t *testing.T) {
	t.Parallel()
	m := testModel()
	act := activeAll(m, now)
	d := Match(query(m).dims("status").metrics("amount_sum").r, act, true, now)
	meta := d.Meta()
	if !meta.Hit || meta.Name != "by_day" || meta.BuildUUID != "b-by_day" || meta.BuiltAt == nil || meta.DataAsOf == nil || meta.Reason != nil {
		t.Fatalf("hit meta: %+v", meta)
	}
	meta = Match(query(m).dims("channel").metrics("amount_sum").r, act, true, now).Meta()
	if meta.Hit || meta.Name != "by_day" || meta.Reason == nil || meta.BuildUUID != "" {
		t.Fatalf("miss meta: %+v", meta)
	}
	if meta := Miss(api.PreAggMissBypassed, "bypassed").Meta(); meta.Hit || meta.Reason.Code != api.PreAggMissBypassed {
		t.Fatalf("bypass meta: %+v", meta)
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 8, 15, 13, 47, 5, 9, time.UTC) // a Thursday
	for g, want := range map[semantic.Grain]string{
		semantic.GrainHour:    "2024-08-15T13:00:00Z",
		semantic.GrainDay:     "2024-08-15T00:00:00Z",
		semantic.GrainWeek:    "2024-08-12T00:00:00Z",
		semantic.GrainMonth:   "2024-08-01T00:00:00Z",
		semantic.GrainQuarter: "2024-07-01T00:00:00Z",
		semantic.GrainYear:    "2024-01-01T00:00:00Z",
	} {
		if got := Truncate(ts, g).Format(time.RFC3339); got != want {
			t.Errorf("%s: got %s, want %s", g, got, want)
		}
	}
	// A Sunday belongs to the week of the Monday before it.
	if got := Truncate(day("2024-08-18"), semantic.GrainWeek); !got.Equal(day("2024-08-12")) {
		t.Errorf("sunday: %s", got)
	}
}

// lookupDim finds a dimension field by its id ("<model>_<name>[_<grain>]"
// or the bare "<name>[_<grain>]").
func lookupDim(m *semantic.Model, id string) (semantic.Field, bool) {
	for i := range m.Dimensions {
		d := &m.Dimensions[i]
		grains := append([]semantic.Grain{""}, semantic.DimGrains(d)...)
		for _, g := range grains {
			full := semantic.FieldID(m.Name, d.Name, g)
			bare := d.Name
			if g != "" {
				bare += "_" + string(g)
			}
			if id == full || id == bare {
				return semantic.Field{ID: full, Dim: d, Grain: g}, true
			}
		}
	}
	return semantic.Field{}, false
}
