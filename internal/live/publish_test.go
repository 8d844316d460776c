package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/live"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/wait"
)

// The store's AfterCommit feeding a Publisher: committed events become notes
// on core NATS <prefix><execution_id> (and hub wake-ups); the events of a
// caller whose work was rolled back never do, even when it shared a
// transaction with callers that committed.
func TestPublisherSendsNotesOfCommittedWorkOnly(t *testing.T) {
	t.Parallel()
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	pubConn, err := nats.Connect(emb.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pubConn.Close)
	subConn, err := nats.Connect(emb.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(subConn.Close)
	const prefix = "test.updates."
	var mu sync.Mutex
	got := map[int64]api.LiveNote{}
	var bad []string
	sub, err := subConn.Subscribe(prefix+">", func(m *nats.Msg) {
		var n api.LiveNote
		mu.Lock()
		defer mu.Unlock()
		if err := json.Unmarshal(m.Data, &n); err != nil || m.Subject != live.Subject(prefix, n.ExecutionID) {
			bad = append(bad, fmt.Sprintf("%s %s", m.Subject, m.Data))
		}
		if _, dup := got[n.EventID]; dup {
			bad = append(bad, fmt.Sprintf("note for event %d twice", n.EventID))
		}
		got[n.EventID] = n
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := subConn.Flush(); err != nil {
		t.Fatal(err)
	}

	hub := live.NewHub()
	pub := live.NewPublisher(prefix, hub, pubConn.Publish, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	drv, err := sqlitedriver.Open(t.Context(), t.TempDir()+"/t.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := store.New(drv, store.Options{AfterCommit: func(evs []store.Event) {
		notes := make([]api.LiveNote, len(evs))
		for i, e := range evs {
			notes[i] = api.LiveNote{ExecutionID: e.ExecutionID, EventID: e.EventID, EventType: e.EventType, Status: e.Status, At: e.CreatedAt}
		}
		pub.Offer(notes)
	}})
	t.Cleanup(func() { st.Close() })

	gen := ids.New(-1)
	// write starts an execution (playbook.started, plus a context.updated,
	// which is not a lifecycle event and goes to the hub only); fail rolls
	// the caller's work back after its inserts.
	write := func(fail bool) (execID, started int64, err error) {
		err = st.Do(t.Context(), 1, func(ctx context.Context, tx store.Tx) error {
			execID, started = gen.Next(), gen.Next()
			now := time.Now().UTC()
			if err := tx.ExecutionInsert(ctx, store.Execution{ExecutionID: execID, Path: "p", Version: 1, Status: api.ExecRunning, StartedAt: now}); err != nil {
				return err
			}
			for _, ev := range []store.Event{
				{EventID: started, ExecutionID: execID, EventType: api.EvPlaybookStarted, Status: string(api.ExecRunning), CreatedAt: now},
				{EventID: gen.Next(), ExecutionID: execID, EventType: api.EvContextUpdated, CreatedAt: now},
			} {
				if err := tx.EventInsert(ctx, ev); err != nil {
					return err
				}
			}
			if fail {
				return errors.New("rolled back on purpose")
			}
			return nil
		})
		return execID, started, err
	}

	// One caller alone, rolled back: no note. Then many at once, sharing
	// transactions, a third of them rolled back.
	_, lone, err := write(true)
	if err == nil {
		t.Fatal("the failing caller succeeded")
	}
	const n = 60
	committed := make([]int64, n)
	rolledBack := make([]int64, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, id, err := write(i%3 == 0)
			switch {
			case i%3 == 0 && err == nil:
				t.Errorf("caller %d should have failed", i)
			case i%3 == 0:
				rolledBack[i] = id
			case err != nil:
				t.Errorf("caller %d: %v", i, err)
			default:
				committed[i] = id
			}
		}()
	}
	wg.Wait()
	// A last commit whose wake-up the hub delivers too.
	wake, unsub := hub.Subscribe(0)
	defer unsub()
	feed, unsubFeed := hub.SubscribeFeed()
	defer unsubFeed()
	_, last, err := write(false)
	if err != nil {
		t.Fatal(err)
	}
	// The publisher handles transactions in commit order and one connection
	// keeps publish order: once the last note is here, every earlier one is.
	wait.Until(t, 10*time.Second, "the last commit's note", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := got[last]
		return ok
	})
	if err := subConn.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("bad notes: %v", bad)
	}
	if _, ok := got[lone]; ok {
		t.Errorf("a note for the rolled-back caller's event %d", lone)
	}
	want := 1
	for i := 0; i < n; i++ {
		if id := rolledBack[i]; id != 0 {
			if _, ok := got[id]; ok {
				t.Errorf("a note for rolled-back event %d", id)
			}
		}
		if id := committed[i]; id != 0 {
			want++
			if n, ok := got[id]; !ok || n.EventType != api.EvPlaybookStarted || n.Status != string(api.ExecRunning) {
				t.Errorf("committed event %d: note %+v (found %v)", id, n, ok)
			}
		}
	}
	if len(got) != want {
		t.Errorf("%d notes, want %d (one playbook.started per committed caller; context.updated is not published)", len(got), want)
	}
	select {
	case <-feed:
	default:
		t.Error("no feed wake-up for a playbook.started")
	}
	select {
	case <-wake:
		t.Error("a wake-up for an execution that had no event")
	default:
	}
}
