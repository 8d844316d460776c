package query

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/warehouse"
)

// Worker tuning.
const (
	// keepaliveEvery is how often a running query sends InProgress to NATS
	// and checks whether it was cancelled.
	keepaliveEvery = 2 * time.Second
	// laneFetchWait bounds one pull; short, so a loop notices free slots.
	laneFetchWait = 2 * time.Second
)

// WorkerConfig configures a warehouse worker.
type WorkerConfig struct {
	NATS          bus.Config // URL and credentials; Stream/Subject/Consumer below
	Stream        string
	Subject       string
	Consumer      string
	Storage       string
	ServerURL     string
	WorkerID      string
	Concurrency   int
	ShutdownGrace time.Duration
}

// Worker runs warehouse queries from the query stream.
type Worker struct {
	cfg  WorkerConfig
	log  *slog.Logger
	conn *bus.Conn
	api  *client.Client
	// slots is the shared pool; the background lane leaves reserve slots
	// free so interactive work never waits behind a background backlog.
	slots   chan struct{}
	reserve int
	wg      sync.WaitGroup
}

// NewWorker connects and makes sure the stream and lane consumers exist.
func NewWorker(ctx context.Context, cfg WorkerConfig, log *slog.Logger) (*Worker, error) {
	if cfg.Concurrency < 1 {
		return nil, fmt.Errorf("concurrency must be >= 1, got %d (NATS_WORKER_CONCURRENCY)", cfg.Concurrency)
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("%s-%d-wh%04x", host, os.Getpid(), rand.IntN(1<<16))
	}
	conn, err := bus.ConnectRetry(ctx, cfg.NATS, log)
	if err != nil {
		return nil, err
	}
	if err := Ensure(ctx, conn.JS, cfg.Stream, cfg.Subject, cfg.Consumer, StorageType(cfg.Storage), max(cfg.Concurrency*4, 256)); err != nil {
		conn.Close()
		return nil, err
	}
	return &Worker{cfg: cfg, log: log.With("worker_id", cfg.WorkerID, "stream", cfg.Stream), conn: conn, api: client.New(cfg.ServerURL),
		slots: make(chan struct{}, cfg.Concurrency), reserve: InteractiveReserve(cfg.Concurrency)}, nil
}

// Run works until ctx ends, then lets running queries finish within the
// grace period and exits.
func (w *Worker) Run(ctx context.Context) error {
	defer w.conn.Close()
	w.log.Info("warehouse worker started", "concurrency", w.cfg.Concurrency, "reserved_interactive", w.reserve)
	var loops sync.WaitGroup
	for _, lane := range []struct {
		consumer string
		reserve  int
	}{{w.cfg.Consumer + InteractiveSuffix, 0}, {w.cfg.Consumer, w.reserve}} {
		loops.Add(1)
		go func() { defer loops.Done(); w.lane(ctx, lane.consumer, lane.reserve) }()
	}
	loops.Wait()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.ShutdownGrace):
		w.log.Warn("shutdown grace ran out with queries running; NATS will redeliver them")
	}
	return nil
}

// lane pulls from one consumer while more than keepFree slots are free.
func (w *Worker) lane(ctx context.Context, consumer string, keepFree int) {
	var cons jetstream.Consumer
	for ctx.Err() == nil {
		free := cap(w.slots) - len(w.slots) - keepFree
		if free <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		if cons == nil {
			c, err := w.conn.JS.Consumer(ctx, w.cfg.Stream, consumer)
			if err != nil {
				if ensureErr := Ensure(ctx, w.conn.JS, w.cfg.Stream, w.cfg.Subject, w.cfg.Consumer, StorageType(w.cfg.Storage), max(w.cfg.Concurrency*4, 256)); ensureErr != nil {
					w.log.Warn("query consumer unavailable; retrying", "consumer", consumer, "err", ensureErr)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
			cons = c
		}
		fctx, cancel := context.WithTimeout(ctx, laneFetchWait)
		batch, err := cons.Fetch(free, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			cons = nil
			continue
		}
		bus.Dispatch(batch, w.slots, &w.wg, w.handle)
		cancel()
		if bus.BatchFailed(batch.Error()) {
			cons = nil // consumer gone (NATS restarted): look it up again
		}
	}
}

func (w *Worker) handle(msg jetstream.Msg) {
	job, err := DecodeJob(msg.Data())
	if err != nil {
		w.log.Error("terminating a message that is not a warehouse job", "err", err)
		_ = msg.TermWithReason(err.Error())
		return
	}
	uuid := job.Payload.QueryUUID
	log := w.log.With("query", uuid)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := w.api.QueryClaim(ctx, uuid, w.cfg.WorkerID)
	if err != nil {
		switch st := client.StatusOf(err); {
		case st == http.StatusConflict: // cancelled, expired, taken or done
			_ = msg.Ack()
		case st == http.StatusNotFound:
			_ = msg.TermWithReason("unknown query")
		default:
			log.Warn("claim failed; the job will be redelivered", "err", err)
			_ = msg.NakWithDelay(time.Second)
		}
		return
	}
	// Keep NATS from redelivering a long query, and stop the warehouse
	// query as soon as the client cancels.
	stop := make(chan struct{})
	defer close(stop)
	go bus.KeepAlive(msg, keepaliveEvery, stop, func() bool {
		// The heartbeat keeps the query ours; a 409 means it was
		// cancelled (or re-queued after we went silent): stop it in the
		// warehouse.
		if err := w.api.QueryHeartbeat(ctx, uuid, w.cfg.WorkerID); client.StatusOf(err) == http.StatusConflict {
			log.Info("query is no longer ours to run; cancelling it in the warehouse", "err", err)
			cancel()
			return false
		}
		return true
	})
	err = w.execute(ctx, cl)
	switch {
	case err == nil, ctx.Err() != nil:
	default:
		if ferr := w.api.QueryFail(context.Background(), uuid, w.cfg.WorkerID, err.Error()); ferr != nil && client.StatusOf(ferr) != http.StatusConflict {
			log.Warn("could not record the failure; the job will be redelivered", "err", ferr)
			_ = msg.NakWithDelay(time.Second)
			return
		}
	}
	_ = msg.Ack()
}

// execute runs the query and streams its rows to the server.
func (w *Worker) execute(ctx context.Context, cl client.ClaimedQuery) error {
	drv, err := warehouse.Open(ctx, warehouse.Conn{Type: cl.Warehouse.Type, URL: cl.Warehouse.URL})
	if err != nil {
		return err
	}
	defer drv.Close()
	pr, pw := io.Pipe()
	upload := make(chan error, 1)
	go func() { upload <- w.api.QueryUpload(context.Background(), cl.QueryUUID, w.cfg.WorkerID, pr) }()
	enc := json.NewEncoder(pw)
	header := false
	qerr := drv.Query(ctx, cl.SQL, func(cols []warehouse.Column) error {
		header = true
		return enc.Encode(resultHeader{Columns: cols})
	}, func(row []any) error { return enc.Encode(row) })
	if qerr == nil && !header {
		qerr = enc.Encode(resultHeader{Columns: []warehouse.Column{}})
	}
	if qerr != nil {
		pw.CloseWithError(qerr)
		<-upload
		return qerr
	}
	pw.Close()
	if err := <-upload; err != nil && client.StatusOf(err) != http.StatusConflict {
		return fmt.Errorf("upload results: %w", err)
	}
	return nil
}
