package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
)

// StartupNATSWait is how long New waits for NATS before it starts serving
// without it. Within this window a broken stream contract (a workqueue
// stream) stops the server with the remedy; after it, the server accepts
// work into the outbox and keeps connecting in the background.
const StartupNATSWait = 5 * time.Second

// ensureTimeout bounds one check of the stream and consumers.
const ensureTimeout = 10 * time.Second

// errNotConnected is what publishing returns before the first connection.
var errNotConnected = errors.New("not connected to NATS yet; notifications wait in the outbox")

// natsLink owns the server's NATS connection, which may arrive late.
//
// Lock order: natsLink.mu is taken alone and never held across I/O.
type natsLink struct {
	s    *Server
	mu   sync.Mutex
	conn *bus.Conn
	// problem is the last stream/consumer check failure, for health.
	problem string
}

func (l *natsLink) get() *bus.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn
}

func (l *natsLink) setProblem(p string) {
	l.mu.Lock()
	l.problem = p
	l.mu.Unlock()
}

func (l *natsLink) getProblem() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.problem
}

// attach installs a connection and re-checks the contract on every
// reconnect (after a NATS restart a memory stream is gone).
func (l *natsLink) attach(c *bus.Conn) {
	c.NC.SetReconnectHandler(func(*nats.Conn) {
		l.s.log.Info("reconnected to NATS; re-checking stream and consumer")
		// The check is the server's goroutine: it starts nothing once the
		// server is stopping, and Run waits for one in progress.
		l.s.bg.Go("NATS re-check", func(ctx context.Context) error { l.ensure(ctx); return nil })
	})
	l.mu.Lock()
	l.conn = c
	l.mu.Unlock()
}

// connectLater keeps trying until ctx ends, then checks the contract.
func (l *natsLink) connectLater(ctx context.Context) {
	c, err := bus.ConnectRetry(ctx, l.s.cfg.NATS.Bus("millrace-server"), l.s.log)
	if err != nil {
		return // shutting down
	}
	l.attach(c)
	l.watchCatalog()
	l.s.log.Info("connected to NATS after startup; publishing the outbox")
	l.ensure(ctx)
}

// ensure checks the stream and consumer and wakes the publisher. It gives
// up when ctx ends (a health request gone, the server stopping).
func (l *natsLink) ensure(ctx context.Context) {
	c := l.get()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	_, err := c.EnsureStream(ctx)
	if err == nil {
		err = l.s.ensureConsumer(ctx, c)
	}
	if err == nil && l.s.cfg.Query.NATSEnabled {
		err = l.s.ensureQuery(ctx, c)
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return // the caller went away: no verdict
	}
	if err != nil {
		l.setProblem(err.Error())
		l.s.log.Error("stream/consumer check failed; notifications wait in the outbox until it is fixed", "err", err)
	} else {
		l.setProblem("")
	}
	l.s.relay.Wake()
}

// PublishBatch lets the relay publish through whatever connection exists.
func (l *natsLink) PublishBatch(ctx context.Context, msgs []bus.OutMsg) []error {
	c := l.get()
	if c == nil {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = errNotConnected
		}
		return errs
	}
	return c.PublishBatch(ctx, msgs)
}

// watchCatalog subscribes to other servers' registers, so this server's
// catalog cache runs a new version at once rather than after its TTL. It
// needs the flow service, so New calls it after making that (and
// connectLater after a late connection); a core subscription outlives
// reconnects.
func (l *natsLink) watchCatalog() {
	c := l.get()
	if c == nil {
		return
	}
	_, err := c.NC.Subscribe(bus.CatalogSubject, func(m *nats.Msg) {
		var w bus.CatalogRegistered
		if err := json.Unmarshal(m.Data, &w); err != nil || w.Path == "" || w.Version <= 0 || w.CatalogID == 0 {
			l.s.log.Warn("ignored a malformed catalog register word", "subject", m.Subject, "err", err)
			return
		}
		l.s.flow.Registered(store.CatalogEntry{CatalogID: w.CatalogID, Path: w.Path, Version: w.Version})
	})
	if err != nil {
		l.s.log.Warn("cannot subscribe to other servers' registers; a new playbook version may run here only after MILLRACE_CATALOG_CACHE_SECONDS",
			"subject", bus.CatalogSubject, "err", err)
	}
}

// catalogRegistered tells the other servers of a register (flow's
// OnRegister). Without NATS they learn of it when their cached latest
// expires (MILLRACE_CATALOG_CACHE_SECONDS).
func (l *natsLink) catalogRegistered(e store.CatalogEntry) {
	c := l.get()
	if c == nil {
		return
	}
	if err := c.PublishCatalogRegistered(bus.CatalogRegistered{Path: e.Path, CatalogID: e.CatalogID, Version: e.Version}); err != nil {
		l.s.log.Warn("cannot tell other servers of a register; they run the previous version for up to MILLRACE_CATALOG_CACHE_SECONDS",
			"path", e.Path, "version", e.Version, "err", err)
	}
}

func (l *natsLink) close() {
	if c := l.get(); c != nil {
		c.Close()
	}
}
