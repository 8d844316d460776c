package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
)

// Defaults of Config.
const (
	DefaultInterval = 15 * time.Second
	// DefaultTimeout bounds one sample: a slow database or NATS delays the
	// gauges, never the server.
	DefaultTimeout = 5 * time.Second
	// MinAge is how fresh a report must be for Report to reuse it: GET
	// /api/ops samples at most once a second however often it is asked.
	MinAge = time.Second
)

// Problem thresholds.
const (
	// lagLimit is the consumer lag that is a problem however it moves.
	lagLimit = 1000
	// lagSamples is how many periodic samples of rising lag make a problem.
	lagSamples = 3
	// skewLimit is the clock skew against the database that is a problem.
	skewLimit = time.Second
	// outboxStuckMin is the least outbox age that is a problem.
	outboxStuckMin = time.Minute
)

// Stream is a JetStream stream the server uses and the worker kind that
// consumes it.
type Stream struct {
	Name string
	Kind string // bus.KindCommands, bus.KindWarehouse, bus.KindPreAggregate
	// Consumer is the commands stream's default durable (NATS_CONSUMER):
	// <Consumer>_<pool> is a worker pool's (bus.PoolConsumer). Empty for
	// the query streams, whose durables are lanes of the default pool.
	Consumer string
}

// pool is the worker pool that takes consumer's messages: P for the
// commands durable <Consumer>_P, "" for the default durable, the query
// lanes and anything else.
func (s Stream) pool(consumer string) string {
	if s.Consumer == "" {
		return ""
	}
	p, ok := strings.CutPrefix(consumer, s.Consumer+"_")
	if !ok || bus.PoolConsumer(s.Consumer, p) != consumer {
		return ""
	}
	return p
}

// Config says what to sample and the settings the problems are judged by.
type Config struct {
	Interval time.Duration // MILLRACE_METRICS_INTERVAL_SECONDS
	Timeout  time.Duration // per sample; 0 is DefaultTimeout
	Streams  []Stream
	// Replicas is NATS_REPLICAS: a stream with another count is reported.
	Replicas       int
	ReapInterval   time.Duration // MILLRACE_REAP_INTERVAL_SECONDS
	RedeliverAfter time.Duration // MILLRACE_REDELIVER_AFTER_SECONDS
}

// Sources are where the monitor reads: the store's operational stats, the
// database's clock (its own small round trip, so the skew is not blurred
// by the stats' run time) and the server's NATS connection (nil until it
// exists).
type Sources struct {
	Stats func(ctx context.Context, now time.Time) (store.OpsStats, error)
	Clock func(ctx context.Context) (time.Time, error)
	NATS  func() *bus.Conn
}

// Monitor samples the store and NATS on an interval and on demand.
type Monitor struct {
	cfg      Config
	src      Sources
	log      *slog.Logger
	g        *gauges
	presence *presence
	now      func() time.Time

	// sem serialises samples; whoever holds it owns last and lags.
	sem  chan struct{}
	last *api.OpsReport
	// lags are the last periodic samples of each consumer's lag.
	lags map[string][]uint64
}

// New builds a monitor; Run samples on the interval.
func New(cfg Config, src Sources, log *slog.Logger) *Monitor {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = bus.DefaultReplicas
	}
	return &Monitor{cfg: cfg, src: src, log: log, g: newGauges(), presence: newPresence(time.Now), now: time.Now,
		sem: make(chan struct{}, 1), lags: map[string][]uint64{}}
}

// Gatherer is the monitor's own registry: the gauges of this server.
func (m *Monitor) Gatherer() prometheus.Gatherer { return m.g.reg }

// Run samples every Config.Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	defer m.presence.close()
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if err := m.acquire(ctx); err != nil {
			return
		}
		m.sample(ctx, true)
		<-m.sem
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Report is the latest picture, sampled now unless a sample is under
// MinAge old. A caller that arrives during a sample waits for it (each
// sample is bounded by Config.Timeout) or for its own ctx. A sample it
// starts runs to its end even if the caller leaves, so a client hanging
// up never leaves the gauges half set.
func (m *Monitor) Report(ctx context.Context) (api.OpsReport, error) {
	if err := m.acquire(ctx); err != nil {
		return api.OpsReport{}, err
	}
	defer func() { <-m.sem }()
	if m.last != nil && m.now().Sub(m.last.At) < MinAge {
		return *m.last, nil
	}
	return m.sample(context.WithoutCancel(ctx), false), nil
}

func (m *Monitor) acquire(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sample reads the store and NATS, exports the gauges and judges the
// problems. periodic samples also feed the lag trend. Holds m.sem.
func (m *Monitor) sample(ctx context.Context, periodic bool) api.OpsReport {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	r := api.OpsReport{Store: "ok", Executions: map[string]int64{}, QueriesQueued: map[string]int64{},
		NATS: api.OpsNATS{Replicas: m.cfg.Replicas, Streams: []api.OpsStream{}}, Problems: []api.OpsProblem{}}
	t0 := m.now()
	st, err := m.src.Stats(ctx, t0.UTC())
	t1 := m.now()
	r.At = t0.Add(t1.Sub(t0) / 2).UTC()
	var db, mid time.Time
	if err == nil {
		db, mid, err = m.dbClock(ctx)
	}
	if err != nil {
		r.Store = "error: " + err.Error()
		addProblem(&r, api.ProblemStore, api.SeverityError, "the store could not be read: "+err.Error(),
			"check DATABASE_URL and that the database is up (`millrace doctor` reads /api/health too)")
		m.g.storeFailed()
	} else {
		m.fromStats(&r, st, db, mid)
		m.g.exportStore(&r)
	}
	m.fromNATS(ctx, &r, periodic)
	m.g.exportNATS(&r)
	if err := m.presence.attach(m.src.NATS()); err != nil {
		m.log.Warn("cannot subscribe to worker presence beats; workers show as offline", "subject", bus.PresencePrefix+">", "err", err)
	}
	r.Workers = m.presence.snapshot(m.kinds())
	m.g.exportWorkers(r.Workers)
	m.judgeWorkers(&r)
	m.last = &r
	return r
}

func age(now time.Time, t *time.Time) float64 {
	if t == nil || !now.After(*t) {
		return 0
	}
	return now.Sub(*t).Seconds()
}

// dbClock reads the database's clock and returns it with the midpoint of
// that round trip on this server's clock: the instant the database most
// likely read it, give or take half the round trip.
func (m *Monitor) dbClock(ctx context.Context) (db, mid time.Time, err error) {
	t0 := m.now()
	db, err = m.src.Clock(ctx)
	t1 := m.now()
	return db, t0.Add(t1.Sub(t0) / 2), err
}

// fromStats fills r from st, and the skew from the database's clock db
// read at mid.
func (m *Monitor) fromStats(r *api.OpsReport, st store.OpsStats, db, mid time.Time) {
	now := r.At
	r.DatabaseTime = &db
	skew := mid.Sub(db)
	r.ClockSkewSeconds = skew.Seconds()
	r.Outbox = api.OpsOutbox{Depth: st.OutboxDepth, OldestAgeSeconds: age(now, st.OutboxOldest)}
	r.Commands = api.OpsCommands{Unclaimed: st.CommandsUnclaimed, UnclaimedOldestAgeSeconds: age(now, st.UnclaimedOldest),
		ExpiredLeases: st.ExpiredLeases, ExpiredLeaseOldestAgeSeconds: age(now, st.ExpiredOldest)}
	for s, n := range st.Executions {
		r.Executions[string(s)] = n
	}
	for l, n := range st.QueriesQueued {
		r.QueriesQueued[l] = n
	}
	if limit := max(outboxStuckMin, 4*m.cfg.ReapInterval); r.Outbox.OldestAgeSeconds > limit.Seconds() {
		addProblem(r, api.ProblemOutboxStuck, api.SeverityError,
			fmt.Sprintf("%d notifications wait to be published (command notifications and outbox rows); the oldest has waited %s (over %s)", r.Outbox.Depth, secs(r.Outbox.OldestAgeSeconds), limit),
			"the relay cannot publish to NATS: check the NATS link below, `millrace nats stream report`, and the server log for publish errors")
	}
	if limit := 2 * m.cfg.RedeliverAfter; limit > 0 && r.Commands.UnclaimedOldestAgeSeconds > limit.Seconds() {
		addProblem(r, api.ProblemCommandsUnclaimed, api.SeverityError,
			fmt.Sprintf("%d commands unclaimed; the oldest has waited %s (over 2 × MILLRACE_REDELIVER_AFTER_SECONDS = %s)", r.Commands.Unclaimed, secs(r.Commands.UnclaimedOldestAgeSeconds), limit),
			"no worker claims them: check that workers run for the commands stream and its pools (`millrace nats consumer report`, worker logs) and that they reach this server (SERVER_API_URL)")
	}
	if r.Commands.ExpiredLeases > 0 && r.Commands.ExpiredLeaseOldestAgeSeconds > m.cfg.ReapInterval.Seconds() {
		addProblem(r, api.ProblemExpiredLeases, api.SeverityWarning,
			fmt.Sprintf("%d commands hold an expired lease; the oldest expired %s ago", r.Commands.ExpiredLeases, secs(r.Commands.ExpiredLeaseOldestAgeSeconds)),
			"their workers died or lost this server mid-command; the reaper re-notifies them every MILLRACE_REAP_INTERVAL_SECONDS: if the count stays, check the server log for reaper errors and the workers' logs")
	}
	if a := skew.Abs(); a > skewLimit {
		addProblem(r, api.ProblemClockSkew, api.SeverityWarning,
			fmt.Sprintf("this server's clock is %s off the database's", skew.Round(time.Millisecond)),
			"synchronise clocks with NTP: leases and reaper cutoffs use each server's clock (docs/architecture.md#clocks)")
	}
}

// fromNATS reads every stream through bus.Conn.Report, the one reader of
// stream state (the CLI reports and GET /api/streams use it too).
func (m *Monitor) fromNATS(ctx context.Context, r *api.OpsReport, periodic bool) {
	c := m.src.NATS()
	if c == nil || !c.NC.IsConnected() {
		addProblem(r, api.ProblemNATSDisconnected, api.SeverityError, "this server is not connected to NATS; notifications wait in the database",
			"check NATS_URL and that NATS is up (`millrace nats stream report`); the server reconnects on its own")
		return
	}
	r.NATS.Connected, r.NATS.URL = true, c.URL()
	names := make([]string, len(m.cfg.Streams))
	for i, s := range m.cfg.Streams {
		names[i] = s.Name
	}
	reports, err := c.Report(ctx, names)
	if err != nil {
		m.log.Warn("stream sample cut short; gauges of the streams not read are missing until the next sample", "err", err)
	}
	for i, sr := range reports {
		s := api.OpsStream{Name: sr.Name, Kind: m.cfg.Streams[i].Kind, Subjects: sr.Subjects, Storage: sr.Storage, Replicas: sr.Replicas,
			Messages: sr.Messages, Bytes: sr.Bytes, Consumers: []api.OpsConsumer{}, Error: sr.Error}
		if sr.Cluster != nil {
			s.Leader = sr.Cluster.Leader
		}
		for _, cr := range sr.Consumers {
			s.Consumers = append(s.Consumers, api.OpsConsumer{Name: cr.Name, Pool: m.cfg.Streams[i].pool(cr.Name), Lag: cr.Lag, Unprocessed: cr.Unprocessed, AckPending: cr.AckPending,
				MaxAckPending: cr.MaxAckPending, Redelivered: cr.Redelivered, Waiting: cr.Waiting, AckWait: cr.AckWait.String(),
				MaxDeliver: cr.MaxDeliver, Delivered: cr.Delivered, LastActive: cr.LastActive})
		}
		m.judgeStream(r, s, periodic)
		r.NATS.Streams = append(r.NATS.Streams, s)
	}
}

func (m *Monitor) judgeStream(r *api.OpsReport, s api.OpsStream, periodic bool) {
	if s.Error != "" {
		return
	}
	if s.Replicas != m.cfg.Replicas {
		addProblem(r, api.ProblemStreamReplicas, api.SeverityWarning,
			fmt.Sprintf("stream %s has %d replicas; NATS_REPLICAS is %d", s.Name, s.Replicas, m.cfg.Replicas),
			fmt.Sprintf("`nats stream edit %s --replicas %d`, or delete the stream and restart a server to recreate it (or set NATS_REPLICAS=%d)", s.Name, m.cfg.Replicas, s.Replicas))
	}
	for _, c := range s.Consumers {
		key := s.Name + "/" + c.Name
		h := m.lags[key]
		if periodic {
			h = append(h, c.Lag)
			if len(h) > lagSamples {
				h = h[len(h)-lagSamples:]
			}
			m.lags[key] = h
		}
		growing := len(h) == lagSamples && h[0] < h[1] && h[1] < h[2]
		if c.Lag > lagLimit || growing {
			why := fmt.Sprintf("over %d", lagLimit)
			if growing {
				why = fmt.Sprintf("growing over the last %d samples", lagSamples)
			}
			addProblem(r, api.ProblemConsumerLag, api.SeverityWarning,
				fmt.Sprintf("consumer %s on %s lags %d messages (%s)", c.Name, s.Name, c.Lag, why),
				fmt.Sprintf("add %s workers (replicas, or KEDA's lagThreshold) or raise NATS_WORKER_CONCURRENCY; `millrace nats consumer report %s` shows where it stands", s.Kind, s.Name))
		}
	}
}

// judgeWorkers flags each (kind, pool) with work waiting on its consumers
// and no worker of that kind and pool online: workers of another pool do
// not take it.
func (m *Monitor) judgeWorkers(r *api.OpsReport) {
	type kp struct{ kind, pool string }
	online := map[kp]int{}
	for _, w := range r.Workers {
		online[kp{w.Kind, w.Pool}] += w.Online
	}
	for _, s := range r.NATS.Streams {
		lags := map[string]uint64{}
		var pools []string
		for _, c := range s.Consumers {
			if _, ok := lags[c.Pool]; !ok {
				pools = append(pools, c.Pool)
			}
			lags[c.Pool] += c.Lag
		}
		for _, p := range pools {
			if lag := lags[p]; lag > 0 && online[kp{s.Kind, p}] == 0 {
				who, start := fmt.Sprintf("no %s worker", s.Kind), fmt.Sprintf("`millrace worker --stream %s`", s.Kind)
				if p != "" {
					who, start = fmt.Sprintf("no %s worker of pool %s", s.Kind, p), fmt.Sprintf("`MILLRACE_WORKER_POOL=%s millrace worker --stream %s`", p, s.Kind)
				}
				addProblem(r, api.ProblemNoWorkers, api.SeverityError,
					fmt.Sprintf("%d messages wait on %s and %s is online", lag, s.Name, who),
					fmt.Sprintf("start %s (workers beat on %s every %s; one that cannot reach NATS does not show)", start, bus.PresenceSubject(s.Kind), bus.PresenceInterval))
			}
		}
	}
}

// kinds are the worker kinds of the streams this server uses.
func (m *Monitor) kinds() []string {
	out := make([]string, 0, len(m.cfg.Streams))
	for _, s := range m.cfg.Streams {
		out = append(out, s.Kind)
	}
	return out
}

func addProblem(r *api.OpsReport, code, severity, msg, hint string) {
	r.Problems = append(r.Problems, api.OpsProblem{Code: code, Severity: severity, Message: msg, Hint: hint})
}

func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}
