package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrWorkqueueStream means the command stream exists with workqueue
	// retention. Workers need a deliver_policy=new consumer, which JetStream
	// refuses on such a stream ("consumer must be deliver all on workqueue
	// stream"), so nothing would ever be consumed.
	ErrWorkqueueStream = errors.New("command stream has workqueue retention")
	// ErrSubjectMismatch means the command stream exists but does not capture
	// the configured subject, so publishes would get no response from it.
	ErrSubjectMismatch = errors.New("command stream does not capture the configured subject")
)

// nats-server's error codes for JSStreamSubjectOverlapErr, and for a
// stream it cannot place: JSStreamReplicasNotSupportedErr (replicas > 1 on
// a single server) and JSClusterNoPeersErrF (too few servers, or too little
// room on them).
const (
	errCodeStreamSubjectOverlap jetstream.ErrorCode = 10065
	errCodeReplicasNotSupported jetstream.ErrorCode = 10074
	errCodeNoPeers              jetstream.ErrorCode = 10005
)

// StreamConfig is the configuration EnsureStream creates the stream with.
func (c Config) StreamConfig() jetstream.StreamConfig {
	storage := jetstream.MemoryStorage
	if c.Storage == StorageFile {
		storage = jetstream.FileStorage
	}
	dup := DuplicateWindow
	if c.MaxAge > 0 && c.MaxAge < dup {
		// JetStream rejects a duplicate window longer than max age.
		dup = c.MaxAge
	}
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "Millrace command notifications (references to command.issued events)",
		Subjects:    []string{c.Subject, c.Subject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     storage,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.MaxBytes,
		Duplicates:  dup,
		Replicas:    c.replicas(),
		// When full, drop the oldest: most are long acknowledged, and a
		// dropped pending one is re-notified by the reaper.
		Discard: jetstream.DiscardOld,
	}
}

// ConsumerConfig is the configuration EnsureConsumer creates the durable
// worker consumer with: the pool's durable, filtered to the pool's subject
// (pool.go), so each pool sees only the steps routed to it.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	desc := "Millrace worker pool"
	switch c.Pool {
	case "":
	case AllPools:
		desc += " (every pool)"
	default:
		desc += " " + c.Pool
	}
	return jetstream.ConsumerConfig{
		Durable:       c.PoolDurable(),
		Description:   desc,
		FilterSubject: c.filterSubject(),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
	}
}

// replicas is the count Millrace creates streams and buckets with.
func (c Config) replicas() int { return max(c.Replicas, DefaultReplicas) }

// placementHint says what to do when JetStream cannot place a stream
// Millrace creates; "" for any other error.
func (c Config) placementHint(err error) string {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return ""
	}
	switch apiErr.ErrorCode {
	case errCodeReplicasNotSupported:
		return fmt.Sprintf("; NATS_REPLICAS=%d needs a NATS cluster: set NATS_REPLICAS=1 for a single NATS server", c.replicas())
	case errCodeNoPeers:
		return fmt.Sprintf("; JetStream has no %d servers with room for the stream (NATS_REPLICAS=%d; their max_memory_store or max_file_store): lower NATS_REPLICAS or NATS_MAX_BYTES, or give JetStream more servers or room", c.replicas(), c.replicas())
	}
	return ""
}

// checkReplicas logs an existing stream whose replica count is not
// NATS_REPLICAS. The stream is used unchanged: scaling a stream moves its
// data between servers, which is the operator's call, not a side effect of
// a restart. The stream report and `millrace doctor` show the mismatch too.
func (c *Conn) checkReplicas(stream string, have int) {
	want := c.Cfg.replicas()
	if have == want {
		return
	}
	c.logger().Warn("existing NATS stream has a different replica count than NATS_REPLICAS; using it unchanged",
		"stream", stream, "replicas", have, "configured", want,
		"remedy", fmt.Sprintf("scale it with `nats stream edit %s --replicas %d`, or delete it with `millrace nats stream rm %s` and restart so Millrace recreates it, or set NATS_REPLICAS=%d", stream, want, stream, have))
}

// KeyValueReplicas is the replica count to create or update the KV bucket
// with: NATS_REPLICAS for a new bucket, the bucket's own for an existing
// one (a mismatch is logged), so an update never rescales it.
func (c *Conn) KeyValueReplicas(ctx context.Context, bucket string) int {
	return c.existingReplicas(ctx, "KV_"+bucket)
}

// ObjectStoreReplicas is KeyValueReplicas for an object store bucket.
func (c *Conn) ObjectStoreReplicas(ctx context.Context, bucket string) int {
	return c.existingReplicas(ctx, "OBJ_"+bucket)
}

func (c *Conn) existingReplicas(ctx context.Context, stream string) int {
	s, err := c.JS.Stream(ctx, stream)
	if err != nil {
		// Missing (or unreadable: creating it reports the real error).
		return c.Cfg.replicas()
	}
	have := s.CachedInfo().Config.Replicas
	c.checkReplicas(stream, have)
	return have
}

// recreateHint is the remedy for a stream we refuse to use.
func recreateHint(stream string) string {
	return fmt.Sprintf("delete it with `millrace nats stream rm %s` (or `nats stream rm %s`) and restart the server and workers so it is recreated with retention=limits", stream, stream)
}

// EnsureStream returns the command stream, creating it from
// Config.StreamConfig if it is missing. An existing stream is never modified:
// one with workqueue retention (ErrWorkqueueStream) or subjects that do not
// capture Config.Subject (ErrSubjectMismatch) is an error naming the remedy;
// other differences are only logged.
func (c *Conn) EnsureStream(ctx context.Context) (jetstream.Stream, error) {
	want := c.Cfg.StreamConfig()
	s, err := c.JS.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = c.JS.CreateStream(ctx, want)
		if err == nil {
			c.logger().Info("created NATS stream", "stream", want.Name, "subjects", want.Subjects,
				"storage", want.Storage.String(), "max_age", want.MaxAge, "replicas", want.Replicas)
			c.warnMemoryReplicas(want.Name, want.Storage, want.Replicas)
			return s, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamSubjectOverlap {
			return nil, fmt.Errorf("create NATS stream %s with subjects %v: %w; another stream already captures these subjects: find it with `nats stream ls`, then remove it or set NATS_STREAM to its name", want.Name, want.Subjects, err)
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create NATS stream %s: %w%s", want.Name, err, c.Cfg.placementHint(err))
		}
		// Another process created it concurrently with a different
		// configuration; judge what it created like any existing stream.
		s, err = c.JS.Stream(ctx, want.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up NATS stream %s: %w", want.Name, err)
	}
	if err := c.checkStream(s.CachedInfo().Config, want); err != nil {
		return nil, err
	}
	return s, nil
}

func (c *Conn) checkStream(have, want jetstream.StreamConfig) error {
	if have.Retention == jetstream.WorkQueuePolicy {
		return fmt.Errorf("%w: stream %s has retention=workqueue but workers need retention=limits (their deliver_policy=new consumer fails with \"consumer must be deliver all on workqueue stream\"); %s",
			ErrWorkqueueStream, have.Name, recreateHint(have.Name))
	}
	if !slices.ContainsFunc(have.Subjects, func(p string) bool { return subjectMatches(p, c.Cfg.Subject) }) {
		return fmt.Errorf("%w: stream %s captures subjects %v but NATS_SUBJECT is %q (expected subjects %v); set NATS_SUBJECT to a subject the stream captures, or %s",
			ErrSubjectMismatch, have.Name, have.Subjects, c.Cfg.Subject, want.Subjects, recreateHint(have.Name))
	}
	c.checkReplicas(have.Name, have.Replicas)
	c.warnMemoryReplicas(have.Name, have.Storage, have.Replicas)
	// Routed steps go to <subject>.<pool> (pool.go): a pool worker cannot
	// run without it, and the server's notifications for them would stay
	// in the outbox.
	routed := c.Cfg.Pool != "" && c.Cfg.Pool != AllPools
	pool := PoolSubject(c.Cfg.Subject, "any-pool")
	if routed {
		pool = c.Cfg.filterSubject()
	}
	if !slices.ContainsFunc(have.Subjects, func(p string) bool { return subjectMatches(p, pool) }) {
		if routed {
			return fmt.Errorf("%w: stream %s captures subjects %v, not %q, the subject of worker pool %q (MILLRACE_WORKER_POOL); %s",
				ErrSubjectMismatch, have.Name, have.Subjects, pool, c.Cfg.Pool, recreateHint(have.Name))
		}
		c.logger().Warn("existing NATS stream does not capture the worker pools' subjects; steps with `pool:` cannot be notified until it does",
			"stream", have.Name, "subjects", have.Subjects, "needed", c.Cfg.Subject+".>", "remedy", recreateHint(have.Name))
	}
	var diffs []string
	if have.Storage != want.Storage {
		diffs = append(diffs, fmt.Sprintf("storage=%s (configured %s)", have.Storage, want.Storage))
	}
	if have.MaxAge != want.MaxAge {
		diffs = append(diffs, fmt.Sprintf("max_age=%v (configured %v)", have.MaxAge, want.MaxAge))
	}
	if have.Retention != want.Retention {
		diffs = append(diffs, fmt.Sprintf("retention=%s (configured %s)", have.Retention, want.Retention))
	}
	if len(diffs) > 0 {
		c.logger().Warn("existing NATS stream differs from configuration; using it unchanged",
			"stream", have.Name, "differences", strings.Join(diffs, ", "))
	}
	return nil
}

// EnsureConsumer ensures the stream (see EnsureStream) and returns the durable
// pull consumer from Config.ConsumerConfig, creating it if missing. An existing
// consumer whose ack wait, max deliver, max ack pending, ack policy or filter
// differ is updated and the change logged. Its deliver policy is left alone:
// JetStream cannot change it, and it only matters when a consumer is created.
func (c *Conn) EnsureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	s, err := c.EnsureStream(ctx)
	if err != nil {
		return nil, err
	}
	want := c.Cfg.ConsumerConfig()
	cons, err := s.Consumer(ctx, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = s.CreateConsumer(ctx, want)
		if err == nil {
			c.logger().Info("created NATS consumer", "stream", c.Cfg.Stream, "consumer", want.Durable,
				"ack_wait", want.AckWait, "max_deliver", want.MaxDeliver, "max_ack_pending", want.MaxAckPending)
			return cons, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return nil, fmt.Errorf("create NATS consumer %s on stream %s: %w", want.Durable, c.Cfg.Stream, err)
		}
		// Created concurrently with other settings; reconcile below.
		cons, err = s.Consumer(ctx, want.Durable)
	}
	if err != nil {
		return nil, fmt.Errorf("look up NATS consumer %s on stream %s: %w", want.Durable, c.Cfg.Stream, err)
	}

	have := cons.CachedInfo().Config
	if have.DeliverPolicy != want.DeliverPolicy {
		c.logger().Warn("existing NATS consumer has a different deliver policy; keeping it (it only affects where a new consumer starts)",
			"consumer", want.Durable, "deliver_policy", have.DeliverPolicy.String(), "configured", want.DeliverPolicy.String())
	}
	updated, diffs := reconcileConsumer(have, want)
	if len(diffs) == 0 {
		return cons, nil
	}
	cons, err = s.CreateOrUpdateConsumer(ctx, updated)
	if err != nil {
		return nil, fmt.Errorf("update NATS consumer %s on stream %s (%s): %w; delete it with `millrace nats consumer rm %s %s` and restart the workers to recreate it",
			want.Durable, c.Cfg.Stream, strings.Join(diffs, ", "), err, c.Cfg.Stream, want.Durable)
	}
	c.logger().Info("updated NATS consumer", "stream", c.Cfg.Stream, "consumer", want.Durable, "changes", strings.Join(diffs, ", "))
	return cons, nil
}

// reconcileConsumer returns have with the settings we own taken from want,
// keeping everything else (including settings made by operators) as it is.
func reconcileConsumer(have, want jetstream.ConsumerConfig) (jetstream.ConsumerConfig, []string) {
	var diffs []string
	out := have
	if have.AckPolicy != want.AckPolicy {
		diffs = append(diffs, fmt.Sprintf("ack_policy %s -> %s", have.AckPolicy, want.AckPolicy))
		out.AckPolicy = want.AckPolicy
	}
	if have.AckWait != want.AckWait {
		diffs = append(diffs, fmt.Sprintf("ack_wait %v -> %v", have.AckWait, want.AckWait))
		out.AckWait = want.AckWait
	}
	if have.MaxDeliver != want.MaxDeliver {
		diffs = append(diffs, fmt.Sprintf("max_deliver %d -> %d", have.MaxDeliver, want.MaxDeliver))
		out.MaxDeliver = want.MaxDeliver
	}
	if have.MaxAckPending != want.MaxAckPending {
		diffs = append(diffs, fmt.Sprintf("max_ack_pending %d -> %d", have.MaxAckPending, want.MaxAckPending))
		out.MaxAckPending = want.MaxAckPending
	}
	// The filter is the routing (pool.go): a default consumer left
	// unfiltered by an older version would take every pool's steps.
	if have.FilterSubject != want.FilterSubject || len(have.FilterSubjects) > 0 {
		diffs = append(diffs, fmt.Sprintf("filter %s -> %s", describeFilter(have), describeFilter(want)))
		out.FilterSubject, out.FilterSubjects = want.FilterSubject, nil
	}
	return out, diffs
}

func describeFilter(c jetstream.ConsumerConfig) string {
	switch {
	case len(c.FilterSubjects) > 0:
		return fmt.Sprintf("%q", c.FilterSubjects)
	case c.FilterSubject != "":
		return fmt.Sprintf("%q", c.FilterSubject)
	}
	return "none"
}
