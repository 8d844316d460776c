package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/preagg/engine"
	"github.com/millrace/millrace/internal/preagg/storage"
)

// preAggStore is where the server finds materializations (Parquet
// objects): the builds service deletes those of replaced builds, and with
// NATS_ENABLED=false the in-process engine writes and reads them. It is
// opened when first needed, since a JetStream bucket needs the NATS
// connection, which may arrive after startup.
type preAggStore struct {
	s    *Server
	kind string // dir | nats
	mu   sync.Mutex
	st   storage.Store
}

// preAggStorageKind resolves PRE_AGGREGATE_STORAGE: empty is nats when NATS
// carries pre-aggregate jobs (NATS_ENABLED=true), else dir.
func preAggStorageKind(cfg config.Server) (string, error) {
	switch cfg.PreAgg.Storage {
	case "":
		if cfg.Query.NATSEnabled {
			return "nats", nil
		}
		return "dir", nil
	case "dir", "nats":
		return cfg.PreAgg.Storage, nil
	}
	return "", fmt.Errorf("PRE_AGGREGATE_STORAGE %q: want nats, dir or empty (nats when NATS_ENABLED=true, else dir)", cfg.PreAgg.Storage)
}

func (p *preAggStore) open(ctx context.Context) (storage.Store, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st != nil {
		return p.st, nil
	}
	cfg := p.s.cfg
	var err error
	switch p.kind {
	case "dir":
		p.st, err = storage.OpenDir(cfg.PreAgg.Dir)
	default:
		c := p.s.nats.get()
		if c == nil {
			return nil, errors.New("the pre-aggregate object store needs NATS, which is not connected yet")
		}
		p.st, err = storage.OpenObjects(ctx, c.JS, cfg.PreAgg.Bucket, bus.StorageType(cfg.NATS.Storage), c.ObjectStoreReplicas(ctx, cfg.PreAgg.Bucket))
	}
	if err != nil {
		p.st = nil
		return nil, fmt.Errorf("pre-aggregate storage (PRE_AGGREGATE_STORAGE=%s): %w", p.kind, err)
	}
	return p.st, nil
}

// openPreAggEngine opens the DuckDB engine that builds and serves
// pre-aggregates in this process when NATS_ENABLED=false; with NATS the
// pre-aggregate workers do both, and the server opens none (nil).
func (s *Server) openPreAggEngine(ctx context.Context) (*engine.Engine, error) {
	p := s.cfg.PreAgg
	if s.cfg.Query.NATSEnabled || !p.Enabled {
		return nil, nil
	}
	st, err := s.preAggStore.open(ctx)
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.Config{MemoryLimit: p.MemoryLimit, Threads: p.Threads, CacheDir: p.CacheDir,
		CacheMaxBytes: int64(p.CacheMaxBytes), Logger: s.log}, st)
	if err != nil {
		return nil, fmt.Errorf("pre-aggregate engine: %w", err)
	}
	return eng, nil
}
