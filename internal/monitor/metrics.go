package monitor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/internal/api"
)

// gauges are one monitor's metrics, on a registry of its own: servers in
// one process (tests, benchmarks) each export their own picture, and the
// server's /metrics gathers it with the process-wide counters.
type gauges struct {
	reg *prometheus.Registry

	natsConnected  prometheus.Gauge
	streamMessages *prometheus.GaugeVec
	lag            *prometheus.GaugeVec
	pending        *prometheus.GaugeVec
	ackPending     *prometheus.GaugeVec
	redelivered    *prometheus.GaugeVec
	waiting        *prometheus.GaugeVec

	storeUp    prometheus.Gauge
	lastSample prometheus.Gauge

	outboxDepth     prometheus.Gauge
	outboxAge       prometheus.Gauge
	unclaimed       prometheus.Gauge
	unclaimedAge    prometheus.Gauge
	expiredLeases   prometheus.Gauge
	expiredAge      prometheus.Gauge
	queriesQueued   *prometheus.GaugeVec
	executions      *prometheus.GaugeVec
	clockSkew       prometheus.Gauge
	workersOnline   *prometheus.GaugeVec
	workerSlots     *prometheus.GaugeVec
	workerSlotsBusy *prometheus.GaugeVec
}

func newGauges() *gauges {
	g := &gauges{reg: prometheus.NewRegistry()}
	gauge := func(name, help string) prometheus.Gauge {
		m := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		g.reg.MustRegister(m)
		return m
	}
	vec := func(name, help string, labels ...string) *prometheus.GaugeVec {
		m := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		g.reg.MustRegister(m)
		return m
	}
	g.natsConnected = gauge("millrace_nats_connected", "1 while this server is connected to NATS, else 0 (notifications then wait in the database).")
	g.streamMessages = vec("millrace_nats_stream_messages", "Messages stored in each JetStream stream this server uses.", "stream")
	// Consumers carry the kind and pool of the workers that take them, so
	// alerts join them with millrace_workers_online.
	g.lag = vec("millrace_nats_consumer_lag_messages", "Consumer lag: messages not yet delivered plus delivered and not yet acknowledged (what KEDA scales on).", "stream", "consumer", "kind", "pool")
	g.pending = vec("millrace_nats_consumer_pending_messages", "Messages not yet delivered to any worker of the consumer (num_pending).", "stream", "consumer", "kind", "pool")
	g.ackPending = vec("millrace_nats_consumer_ack_pending_messages", "Messages delivered to workers and not yet acknowledged: jobs in flight for workers that ack on completion; for commands workers that ack on claim (MILLRACE_WORKER_ACK=claim, the default) only notifications not yet claimed (millrace_worker_slots_busy counts running commands).", "stream", "consumer", "kind", "pool")
	g.redelivered = vec("millrace_nats_consumer_redelivered_messages", "Messages in flight that were delivered more than once.", "stream", "consumer", "kind", "pool")
	g.waiting = vec("millrace_nats_consumer_waiting_pulls", "Open pull requests on the consumer: idle workers asking for work.", "stream", "consumer", "kind", "pool")
	g.storeUp = gauge("millrace_monitor_store_up", "1 when this server's last sample read the store, else 0 (the store gauges then keep their last values).")
	g.lastSample = gauge("millrace_monitor_last_sample_timestamp_seconds", "Unix time of this server's last sample that read the store: how old the store gauges are.")
	g.outboxDepth = gauge("millrace_outbox_depth", "Notifications not yet acknowledged by NATS: pending command notifications plus outbox rows.")
	g.outboxAge = gauge("millrace_outbox_oldest_age_seconds", "Age of the oldest notification already due for publishing, command or outbox row (0 when none).")
	g.unclaimed = gauge("millrace_commands_unclaimed", "Commands issued and not yet claimed by a worker.")
	g.unclaimedAge = gauge("millrace_commands_unclaimed_oldest_age_seconds", "Age of the oldest issued, unclaimed command since it became available (0 when none).")
	g.expiredLeases = gauge("millrace_commands_expired_leases", "Claimed or running commands whose lease expired (their worker stopped renewing it).")
	g.expiredAge = gauge("millrace_commands_expired_lease_oldest_age_seconds", "How long ago the oldest expired lease of a claimed or running command expired (0 when none): the reaper re-notifies within MILLRACE_REAP_INTERVAL_SECONDS, so a large age means it does not.")
	g.queriesQueued = vec("millrace_queries_queued", "Warehouse and metric queries queued for a worker, by lane (interactive, background, pre-aggregate).", "lane")
	g.executions = vec("millrace_executions", "Executions by non-terminal status (finished ones are counted by millrace_executions_completed_total and _failed_total).", "status")
	g.clockSkew = gauge("millrace_clock_skew_seconds", "This server's clock minus the database's clock, at the midpoint of a round trip that reads only the database's clock.")
	g.workersOnline = vec("millrace_workers_online", "Workers heard from within the last 3 presence beats, by kind and pool.", "kind", "pool")
	g.workerSlots = vec("millrace_worker_slots", "Job slots of the online workers, by kind and pool.", "kind", "pool")
	g.workerSlotsBusy = vec("millrace_worker_slots_busy", "Busy job slots of the online workers, by kind and pool.", "kind", "pool")
	return g
}

// storeFailed marks the store gauges stale: they keep the values of the
// last sample that read the store, and store_up says they are old.
func (g *gauges) storeFailed() { g.storeUp.Set(0) }

// exportStore sets the store gauges from r, a sample that read the store.
func (g *gauges) exportStore(r *api.OpsReport) {
	g.storeUp.Set(1)
	g.lastSample.Set(float64(r.At.UnixNano()) / 1e9)
	g.outboxDepth.Set(float64(r.Outbox.Depth))
	g.outboxAge.Set(r.Outbox.OldestAgeSeconds)
	g.unclaimed.Set(float64(r.Commands.Unclaimed))
	g.unclaimedAge.Set(r.Commands.UnclaimedOldestAgeSeconds)
	g.expiredLeases.Set(float64(r.Commands.ExpiredLeases))
	g.expiredAge.Set(r.Commands.ExpiredLeaseOldestAgeSeconds)
	for lane, n := range r.QueriesQueued {
		g.queriesQueued.WithLabelValues(lane).Set(float64(n))
	}
	for st, n := range r.Executions {
		g.executions.WithLabelValues(st).Set(float64(n))
	}
	g.clockSkew.Set(r.ClockSkewSeconds)
}

// exportNATS replaces the stream and consumer series: a consumer that is
// gone loses its series.
func (g *gauges) exportNATS(r *api.OpsReport) {
	if r.NATS.Connected {
		g.natsConnected.Set(1)
	} else {
		g.natsConnected.Set(0)
	}
	for _, v := range []*prometheus.GaugeVec{g.streamMessages, g.lag, g.pending, g.ackPending, g.redelivered, g.waiting} {
		v.Reset()
	}
	for _, s := range r.NATS.Streams {
		if s.Error != "" {
			continue
		}
		g.streamMessages.WithLabelValues(s.Name).Set(float64(s.Messages))
		for _, c := range s.Consumers {
			l := []string{s.Name, c.Name, s.Kind, c.Pool}
			g.lag.WithLabelValues(l...).Set(float64(c.Lag))
			g.pending.WithLabelValues(l...).Set(float64(c.Unprocessed))
			g.ackPending.WithLabelValues(l...).Set(float64(c.AckPending))
			g.redelivered.WithLabelValues(l...).Set(float64(c.Redelivered))
			g.waiting.WithLabelValues(l...).Set(float64(c.Waiting))
		}
	}
}

func (g *gauges) exportWorkers(ws []api.OpsWorkers) {
	for _, w := range ws {
		g.workersOnline.WithLabelValues(w.Kind, w.Pool).Set(float64(w.Online))
		g.workerSlots.WithLabelValues(w.Kind, w.Pool).Set(float64(w.Slots))
		g.workerSlotsBusy.WithLabelValues(w.Kind, w.Pool).Set(float64(w.Busy))
	}
}
