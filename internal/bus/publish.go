package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// OutMsg is one message for PublishBatch.
type OutMsg struct {
	// Subject defaults to Config.Subject when empty.
	Subject string
	// MsgID becomes the Nats-Msg-Id header; the stream drops a second message
	// with the same id within DuplicateWindow. Empty disables deduplication.
	MsgID string
	Data  []byte
	// Header is sent with the message (the relay's traceparent); nil sends none.
	Header nats.Header
}

// NotificationMsg wraps n for PublishBatch on the configured subject, with the
// command id as message id so republishing the same command is a no-op.
func (c *Conn) NotificationMsg(n Notification) OutMsg {
	return OutMsg{Subject: c.Cfg.Subject, MsgID: n.CommandID, Data: n.Encode()}
}

// PublishBatch publishes msgs asynchronously and waits for every ack, bounded
// by ctx. It returns one error per message: nil means JetStream stored it (or
// already had it: a duplicate is success).
//
// If the stream is missing (for example NATS restarted with memory storage,
// "no response from stream"), it calls EnsureStream once and republishes
// those messages. Messages lost to a disconnect or an ack timeout are
// republished too, up to DefaultPublishAttempts rounds; the message ids make
// this safe.
func (c *Conn) PublishBatch(ctx context.Context, msgs []OutMsg) []error {
	errs := make([]error, len(msgs))
	pending := make([]int, len(msgs))
	for i := range pending {
		pending[i] = i
	}
	ensured := false
	for round := 1; len(pending) > 0; round++ {
		c.publishRound(ctx, msgs, pending, errs)
		if ctx.Err() != nil || round >= DefaultPublishAttempts {
			break
		}
		var retry, noStream []int
		for _, i := range pending {
			switch {
			case errors.Is(errs[i], jetstream.ErrNoStreamResponse):
				noStream = append(noStream, i)
			case errors.Is(errs[i], nats.ErrDisconnected), errors.Is(errs[i], jetstream.ErrAsyncPublishTimeout):
				retry = append(retry, i)
			}
		}
		if len(noStream) > 0 && !ensured {
			ensured = true
			if _, err := c.EnsureStream(ctx); err != nil {
				for _, i := range noStream {
					errs[i] = fmt.Errorf("%w; recreating the stream failed: %w", errs[i], err)
				}
			} else {
				c.logger().Warn("NATS stream was missing; recreated it and republishing",
					"stream", c.Cfg.Stream, "messages", len(noStream))
				retry = append(retry, noStream...)
			}
		}
		pending = retry
	}
	return errs
}

// publishRound publishes msgs[i] for every i in idx and records the outcome in errs.
func (c *Conn) publishRound(ctx context.Context, msgs []OutMsg, idx []int, errs []error) {
	futures := make([]jetstream.PubAckFuture, len(idx))
	// Let the async publisher stall (when too many acks are outstanding) as
	// long as the caller is willing to wait, not just its 200ms default.
	stall := DefaultPublishAckTimeout
	if dl, ok := ctx.Deadline(); ok {
		stall = max(time.Until(dl), time.Millisecond)
	}
	for k, i := range idx {
		m := msgs[i]
		subject := m.Subject
		if subject == "" {
			subject = c.Cfg.Subject
		}
		nm := &nats.Msg{Subject: subject, Data: m.Data, Header: m.Header}
		opts := []jetstream.PublishOpt{jetstream.WithStallWait(stall)}
		if m.MsgID != "" {
			opts = append(opts, jetstream.WithMsgID(m.MsgID))
		}
		if err := ctx.Err(); err != nil {
			errs[i] = c.publishErr(m, subject, err)
			continue
		}
		f, err := c.JS.PublishMsgAsync(nm, opts...)
		if err != nil {
			errs[i] = c.publishErr(m, subject, err)
			continue
		}
		futures[k] = f
	}
	for k, i := range idx {
		f := futures[k]
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			errs[i] = nil
		case err := <-f.Err():
			errs[i] = c.publishErr(msgs[i], f.Msg().Subject, err)
		case <-ctx.Done():
			errs[i] = c.publishErr(msgs[i], f.Msg().Subject, ctx.Err())
		}
	}
}

func (c *Conn) publishErr(m OutMsg, subject string, err error) error {
	hint := ""
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		hint = fmt.Sprintf("; verify stream %s exists (`millrace nats stream info %s`) and captures subject %q (NATS_SUBJECT)", c.Cfg.Stream, c.Cfg.Stream, subject)
	}
	if m.MsgID != "" {
		return fmt.Errorf("publish to %s (msg id %s): %w%s", subject, m.MsgID, err, hint)
	}
	return fmt.Errorf("publish to %s: %w%s", subject, err, hint)
}
