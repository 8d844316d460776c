package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The warehouse query stream (the Lightdash contract): the server publishes
// jobs, warehouse workers pull them. Both sides share this file, so a worker
// needs nothing from the server's query package.
//
// Lanes are subjects under the contract subject; each lane has its own
// durable consumer so a deep background queue never delays interactive work.
const (
	DefaultQueryStream   = "WAREHOUSE_QUERY_JOBS"
	DefaultQuerySubject  = "warehouse.query.jobs"
	DefaultQueryConsumer = "worker-warehouse" // background lane (and bare-subject jobs)

	QueryLaneInteractive   = "interactive"
	QueryLaneBackground    = "background"
	QueryInteractiveSuffix = "-interactive" // consumer of the interactive lane: worker-warehouse-interactive

	queryStreamMaxAge       = 24 * time.Hour // queries expire long before this
	queryStreamDescription  = "Millrace warehouse query jobs (query ids only; the SQL never travels over NATS)"
	queryConsumerAckWait    = 30 * time.Second // workers send InProgress well within it
	queryConsumerMaxDeliver = 1000
)

// QueryLaneSubject is the subject a lane's jobs are published on.
func QueryLaneSubject(prefix, lane string) string { return prefix + "." + lane }

// QueryInteractiveReserve is how many of concurrency slots background
// queries may not take, so an interactive query never waits behind a
// background backlog (in the server's own executor and in warehouse
// workers alike).
func QueryInteractiveReserve(concurrency int) int { return max(1, concurrency/10) }

// QueryJob is the NATS payload: {jobId, payload: {queryUuid}, traceHeader?}.
type QueryJob struct {
	JobID       string          `json:"jobId"`
	Payload     QueryJobPayload `json:"payload"`
	TraceHeader string          `json:"traceHeader,omitempty"`
}

// QueryJobPayload carries only the query's id.
type QueryJobPayload struct {
	QueryUUID string `json:"queryUuid"`
}

// DecodeQueryJob parses a job strictly.
func DecodeQueryJob(b []byte) (QueryJob, error) {
	var j QueryJob
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&j); err != nil {
		return j, fmt.Errorf("not a warehouse job: %w", err)
	}
	if j.Payload.QueryUUID == "" || j.JobID == "" {
		return j, errors.New("warehouse job lacks jobId or payload.queryUuid")
	}
	return j, nil
}

// QueryStreamConfig is the stream Millrace creates for query jobs.
func QueryStreamConfig(stream, subject string, storage jetstream.StorageType, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: stream, Description: queryStreamDescription, Subjects: []string{subject, subject + ".>"},
		Retention: jetstream.LimitsPolicy, Storage: storage, MaxAge: queryStreamMaxAge, Duplicates: 2 * time.Minute,
		Discard: jetstream.DiscardOld, Replicas: replicas}
}

// QueryConsumerConfigs are the two lane consumers (background first).
func QueryConsumerConfigs(consumer, subject string, maxAckPending int) []jetstream.ConsumerConfig {
	base := jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: queryConsumerAckWait, MaxDeliver: queryConsumerMaxDeliver, MaxAckPending: maxAckPending}
	bg, in := base, base
	bg.Durable, bg.FilterSubjects = consumer, []string{subject, QueryLaneSubject(subject, QueryLaneBackground)}
	in.Durable, in.FilterSubjects = consumer+QueryInteractiveSuffix, []string{QueryLaneSubject(subject, QueryLaneInteractive)}
	return []jetstream.ConsumerConfig{bg, in}
}

// EnsureQueryStream creates the query stream (with the connection's
// NATS_STORAGE and NATS_REPLICAS) and lane consumers when missing. An
// existing stream is left alone (operator state; a different replica count
// is logged) unless it has workqueue retention, which the consumers cannot
// share.
func (c *Conn) EnsureQueryStream(ctx context.Context, stream, subject, consumer string, maxAckPending int) error {
	st, err := c.JS.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = c.JS.CreateStream(ctx, QueryStreamConfig(stream, subject, StorageType(c.Cfg.Storage), c.Cfg.replicas()))
	} else if err == nil {
		c.checkReplicas(stream, st.CachedInfo().Config.Replicas)
	}
	if err != nil {
		return fmt.Errorf("query stream %s: %w%s", stream, err, c.Cfg.placementHint(err))
	}
	if st.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
		return fmt.Errorf("query stream %s has workqueue retention; delete it with `millrace nats stream rm %s` and restart so it is recreated with retention=limits", stream, stream)
	}
	for _, cc := range QueryConsumerConfigs(consumer, subject, maxAckPending) {
		if _, err := st.Consumer(ctx, cc.Durable); err == nil {
			continue
		}
		if _, err := st.CreateOrUpdateConsumer(ctx, cc); err != nil {
			return fmt.Errorf("query consumer %s: %w", cc.Durable, err)
		}
	}
	return nil
}

// StorageType maps the NATS_STORAGE setting.
func StorageType(s string) jetstream.StorageType {
	if s == StorageFile {
		return jetstream.FileStorage
	}
	return jetstream.MemoryStorage
}

// QueryWaiting reports, for health, how many pulls and unacknowledged jobs
// the lane consumers have: zero with queries queued is the stall the seeds
// warn about.
func QueryWaiting(ctx context.Context, js jetstream.JetStream, stream, consumer string) (pulling int, err error) {
	for _, name := range []string{consumer, consumer + QueryInteractiveSuffix} {
		c, err := js.Consumer(ctx, stream, name)
		if err != nil {
			return 0, err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return 0, err
		}
		pulling += ci.NumWaiting + ci.NumAckPending
	}
	return pulling, nil
}
