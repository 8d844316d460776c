package bustest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// HoldKnownState publishes five messages to subject, which cons's stream
// captures, and leaves every kind a report tells apart: seq 1
// acknowledged, seq 2 redelivered and held, seq 3 held, seq 4 deleted
// before delivery, seq 5 never delivered. The stream then has 4 messages
// (1 deleted, last seq 5) and cons 2 pending acks, 1 redelivered, 1
// unprocessed, ack floor 1.
func HoldKnownState(t testing.TB, js jetstream.JetStream, subject string, cons jetstream.Consumer) {
	t.Helper()
	ctx := t.Context()
	for i := range 5 {
		if _, err := js.Publish(ctx, subject, []byte("notification"), jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, cons.CachedInfo().Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := FetchOne(t, cons).DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if err := FetchOne(t, cons).Nak(); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for len(seen) < 2 {
		md, err := FetchOne(t, cons).Metadata()
		if err != nil {
			t.Fatal(err)
		}
		seen[md.Sequence.Stream] = true
	}
	if !seen[2] || !seen[3] {
		t.Fatalf("fetched %v, want the redelivered 2 and 3", seen)
	}
}

// FetchOne pulls the next message of cons, waiting up to 10 s for it.
func FetchOne(t testing.TB, cons jetstream.Consumer) jetstream.Msg {
	t.Helper()
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m
	}
	t.Fatalf("no message fetched: %v", batch.Error())
	return nil
}
