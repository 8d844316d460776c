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

// The pre-aggregate stream (the Lightdash contract): the server publishes
// metric queries to serve from a pre-aggregate and materialization
// (build) jobs; pre-aggregate workers pull them. Each payload names only
// an id; the worker reads the rest from the server.
//
// Two durable consumers, like the warehouse lanes: worker-pre-aggregate
// (the contract's name) takes query jobs, and
// worker-pre-aggregate-materialization takes builds, so a long build never
// holds a slot a dashboard query is waiting for.
const (
	DefaultPreAggStream        = "PRE_AGGREGATE_QUERY_JOBS"
	DefaultPreAggQuerySubject  = "pre_aggregate.query.jobs"
	DefaultPreAggBuildSubject  = "pre_aggregate.materialization.jobs"
	DefaultPreAggConsumer      = "worker-pre-aggregate"
	PreAggBuildConsumerSuffix  = "-materialization" // worker-pre-aggregate-materialization
	DefaultPreAggObjectBucket  = "millrace_preaggregates"
	DefaultPreAggBuildSlots    = 2 // PRE_AGGREGATE_BUILD_CONCURRENCY
	preAggStreamDescription    = "Millrace pre-aggregate jobs: metric queries to serve and materializations to build (ids only)"
	preAggConsumerAckWait      = 30 * time.Second
	preAggConsumerMaxDeliver   = 1000
	preAggStreamMaxAge         = 24 * time.Hour
	preAggStreamDuplicates     = 2 * time.Minute
	preAggBuildPayloadRequired = "materialization job lacks jobId or payload.materializationUuid"
)

// PreAggView is the name a build's Parquet files are registered under in
// DuckDB when a query is served: a ServePlan's SQL reads FROM it.
const PreAggView = "preagg"

// PreAggBuildJob is a materialization job: {jobId, payload:
// {materializationUuid}}. Query jobs use QueryJob.
type PreAggBuildJob struct {
	JobID       string                `json:"jobId"`
	Payload     PreAggBuildJobPayload `json:"payload"`
	TraceHeader string                `json:"traceHeader,omitempty"`
}

// PreAggBuildJobPayload carries only the build's id.
type PreAggBuildJobPayload struct {
	MaterializationUUID string `json:"materializationUuid"`
}

// DecodePreAggBuildJob parses a materialization job strictly.
func DecodePreAggBuildJob(b []byte) (PreAggBuildJob, error) {
	var j PreAggBuildJob
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&j); err != nil {
		return j, fmt.Errorf("not a materialization job: %w", err)
	}
	if j.Payload.MaterializationUUID == "" || j.JobID == "" {
		return j, errors.New(preAggBuildPayloadRequired)
	}
	return j, nil
}

// PreAggStreamConfig is the stream Millrace creates for pre-aggregate jobs.
func PreAggStreamConfig(stream, querySubject, buildSubject string, storage jetstream.StorageType, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: stream, Description: preAggStreamDescription, Subjects: []string{querySubject, buildSubject},
		Retention: jetstream.LimitsPolicy, Storage: storage, MaxAge: preAggStreamMaxAge, Duplicates: preAggStreamDuplicates,
		Discard: jetstream.DiscardOld, Replicas: replicas}
}

// PreAggConsumerConfigs are the query consumer and the build consumer.
func PreAggConsumerConfigs(consumer, querySubject, buildSubject string, maxAckPending int) []jetstream.ConsumerConfig {
	base := jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: preAggConsumerAckWait, MaxDeliver: preAggConsumerMaxDeliver, MaxAckPending: maxAckPending}
	q, b := base, base
	q.Durable, q.FilterSubject = consumer, querySubject
	b.Durable, b.FilterSubject = consumer+PreAggBuildConsumerSuffix, buildSubject
	return []jetstream.ConsumerConfig{q, b}
}

// EnsurePreAggStream creates the pre-aggregate stream (with the
// connection's NATS_STORAGE and NATS_REPLICAS) and its consumers when
// missing; an existing stream is left alone (a different replica count is
// logged) unless it has workqueue retention, which two consumers cannot
// share.
func (c *Conn) EnsurePreAggStream(ctx context.Context, stream, querySubject, buildSubject, consumer string, maxAckPending int) error {
	st, err := c.JS.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = c.JS.CreateStream(ctx, PreAggStreamConfig(stream, querySubject, buildSubject, StorageType(c.Cfg.Storage), c.Cfg.replicas()))
	} else if err == nil {
		c.checkReplicas(stream, st.CachedInfo().Config.Replicas)
	}
	if err != nil {
		return fmt.Errorf("pre-aggregate stream %s: %w%s", stream, err, c.Cfg.placementHint(err))
	}
	if st.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
		return fmt.Errorf("pre-aggregate stream %s has workqueue retention; delete it with `millrace nats stream rm %s` and restart so it is recreated with retention=limits", stream, stream)
	}
	for _, cc := range PreAggConsumerConfigs(consumer, querySubject, buildSubject, maxAckPending) {
		if _, err := st.Consumer(ctx, cc.Durable); err == nil {
			continue
		}
		if _, err := st.CreateOrUpdateConsumer(ctx, cc); err != nil {
			return fmt.Errorf("pre-aggregate consumer %s: %w", cc.Durable, err)
		}
	}
	return nil
}
