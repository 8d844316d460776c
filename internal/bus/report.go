package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Report is a snapshot of the command stream and worker consumer for the CLI
// and health checks.
type Report struct {
	// URL is the connected server, without password.
	URL       string          `json:"url"`
	Connected bool            `json:"connected"`
	Stream    StreamReport    `json:"stream"`
	Consumer  *ConsumerReport `json:"consumer,omitempty"` // nil until a worker created it
}

// StreamReport summarizes the stream's configuration and contents.
type StreamReport struct {
	Name       string        `json:"name"`
	Subjects   []string      `json:"subjects"`
	Retention  string        `json:"retention"`
	Storage    string        `json:"storage"`
	MaxAge     time.Duration `json:"max_age"`
	Duplicates time.Duration `json:"duplicates"`
	Messages   uint64        `json:"messages"`
	Bytes      uint64        `json:"bytes"`
	FirstSeq   uint64        `json:"first_seq"`
	LastSeq    uint64        `json:"last_seq"`
	Consumers  int           `json:"consumers"`
}

// ConsumerReport summarizes the worker consumer's configuration and backlog.
type ConsumerReport struct {
	Name           string        `json:"name"`
	DeliverPolicy  string        `json:"deliver_policy"`
	AckPolicy      string        `json:"ack_policy"`
	AckWait        time.Duration `json:"ack_wait"`
	MaxDeliver     int           `json:"max_deliver"`
	MaxAckPending  int           `json:"max_ack_pending"`
	NumPending     uint64        `json:"num_pending"`     // not yet delivered
	NumAckPending  int           `json:"num_ack_pending"` // delivered, awaiting ack
	NumRedelivered int           `json:"num_redelivered"`
	NumWaiting     int           `json:"num_waiting"` // open pull requests, roughly idle workers
}

// Report reads the stream and consumer state without creating anything. A
// missing stream is an error wrapping jetstream.ErrStreamNotFound; a missing
// consumer leaves Report.Consumer nil.
func (c *Conn) Report(ctx context.Context) (Report, error) {
	r := Report{URL: Redact(c.NC.ConnectedUrl()), Connected: c.NC.IsConnected()}
	s, err := c.JS.Stream(ctx, c.Cfg.Stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return r, fmt.Errorf("NATS stream %s: %w; it is created when the server or a worker starts", c.Cfg.Stream, err)
		}
		return r, fmt.Errorf("NATS stream %s: %w", c.Cfg.Stream, err)
	}
	si := s.CachedInfo()
	r.Stream = StreamReport{
		Name:       si.Config.Name,
		Subjects:   si.Config.Subjects,
		Retention:  si.Config.Retention.String(),
		Storage:    si.Config.Storage.String(),
		MaxAge:     si.Config.MaxAge,
		Duplicates: si.Config.Duplicates,
		Messages:   si.State.Msgs,
		Bytes:      si.State.Bytes,
		FirstSeq:   si.State.FirstSeq,
		LastSeq:    si.State.LastSeq,
		Consumers:  si.State.Consumers,
	}
	cons, err := s.Consumer(ctx, c.Cfg.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("NATS consumer %s on stream %s: %w", c.Cfg.Consumer, c.Cfg.Stream, err)
	}
	ci := cons.CachedInfo()
	r.Consumer = &ConsumerReport{
		Name:           ci.Name,
		DeliverPolicy:  ci.Config.DeliverPolicy.String(),
		AckPolicy:      ci.Config.AckPolicy.String(),
		AckWait:        ci.Config.AckWait,
		MaxDeliver:     ci.Config.MaxDeliver,
		MaxAckPending:  ci.Config.MaxAckPending,
		NumPending:     ci.NumPending,
		NumAckPending:  ci.NumAckPending,
		NumRedelivered: ci.NumRedelivered,
		NumWaiting:     ci.NumWaiting,
	}
	return r, nil
}
