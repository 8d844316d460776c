package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
)

// The Lightdash contract: stream, subject and durable consumer names.
// Lanes are subjects under the contract subject; each lane has its own
// durable consumer so a deep background queue never delays interactive work.
const (
	DefaultStream      = "WAREHOUSE_QUERY_JOBS"
	DefaultSubject     = "warehouse.query.jobs"
	DefaultConsumer    = "worker-warehouse" // background lane (and bare-subject jobs)
	InteractiveSuffix  = "-interactive"     // consumer of the interactive lane: worker-warehouse-interactive
	streamMaxAge       = 24 * time.Hour     // queries expire long before this
	streamDescription  = "Millrace warehouse query jobs (query ids only; the SQL never travels over NATS)"
	consumerAckWait    = 30 * time.Second // workers send InProgress well within it
	consumerMaxDeliver = 1000
)

// LaneSubject is the subject a lane's jobs are published on.
func LaneSubject(prefix, lane string) string { return prefix + "." + lane }

// Job is the NATS payload: {jobId, payload: {queryUuid}, traceHeader?}.
type Job struct {
	JobID       string     `json:"jobId"`
	Payload     JobPayload `json:"payload"`
	TraceHeader string     `json:"traceHeader,omitempty"`
}

// JobPayload carries only the query's id.
type JobPayload struct {
	QueryUUID string `json:"queryUuid"`
}

// DecodeJob parses a job strictly.
func DecodeJob(b []byte) (Job, error) {
	var j Job
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(&j); err != nil {
		return j, fmt.Errorf("not a warehouse job: %w", err)
	}
	if j.Payload.QueryUUID == "" || j.JobID == "" {
		return j, errors.New("warehouse job lacks jobId or payload.queryUuid")
	}
	return j, nil
}

// enqueue writes the job's outbox row inside tx.
func (s *Service) enqueue(ctx context.Context, tx store.Tx, q store.Query, msgID string, now time.Time) error {
	payload, _ := json.Marshal(Job{JobID: msgID, Payload: JobPayload{QueryUUID: q.QueryUUID}})
	return tx.OutboxInsert(ctx, store.OutboxMsg{ID: s.ids.Next(), Subject: LaneSubject(s.cfg.Subject, q.Lane),
		MsgID: msgID, Payload: payload, CreatedAt: now, AvailableAt: now})
}

// StreamConfig is the stream Millrace creates for query jobs.
func StreamConfig(stream, subject string, storage jetstream.StorageType) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: stream, Description: streamDescription, Subjects: []string{subject, subject + ".>"},
		Retention: jetstream.LimitsPolicy, Storage: storage, MaxAge: streamMaxAge, Duplicates: 2 * time.Minute,
		Discard: jetstream.DiscardOld}
}

// ConsumerConfigs are the two lane consumers (background first).
func ConsumerConfigs(consumer, subject string, maxAckPending int) []jetstream.ConsumerConfig {
	base := jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: consumerAckWait, MaxDeliver: consumerMaxDeliver, MaxAckPending: maxAckPending}
	bg, in := base, base
	bg.Durable, bg.FilterSubjects = consumer, []string{subject, LaneSubject(subject, LaneBackground)}
	in.Durable, in.FilterSubjects = consumer+InteractiveSuffix, []string{LaneSubject(subject, LaneInteractive)}
	return []jetstream.ConsumerConfig{bg, in}
}

// Ensure creates the query stream and lane consumers when missing. An
// existing stream is left alone (operator state) unless it has workqueue
// retention, which the consumers cannot share.
func Ensure(ctx context.Context, js jetstream.JetStream, stream, subject, consumer string, storage jetstream.StorageType, maxAckPending int) error {
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, StreamConfig(stream, subject, storage))
	}
	if err != nil {
		return fmt.Errorf("query stream %s: %w", stream, err)
	}
	if st.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
		return fmt.Errorf("query stream %s has workqueue retention; delete it with `millrace nats stream rm %s` and restart so it is recreated with retention=limits", stream, stream)
	}
	for _, cc := range ConsumerConfigs(consumer, subject, maxAckPending) {
		if _, err := st.Consumer(ctx, cc.Durable); err == nil {
			continue
		}
		if _, err := st.CreateOrUpdateConsumer(ctx, cc); err != nil {
			return fmt.Errorf("query consumer %s: %w", cc.Durable, err)
		}
	}
	return nil
}

// storageType maps the NATS_STORAGE setting.
func StorageType(s string) jetstream.StorageType {
	if s == bus.StorageFile {
		return jetstream.FileStorage
	}
	return jetstream.MemoryStorage
}

// Waiting reports, for health, whether queued queries have no worker
// pulling: the stall the seeds warn about.
func Waiting(ctx context.Context, js jetstream.JetStream, stream, consumer string) (pulling int, err error) {
	for _, name := range []string{consumer, consumer + InteractiveSuffix} {
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
