package builds

import (
	"context"
	"encoding/json"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/store"
)

// Garbage collection of materialization objects: once a build no longer
// serves (superseded, or failed after writing: an empty build), its
// objects that the active build does not list (a window build lists the
// partitions it kept from older builds) are deleted after GCGrace, which
// leaves queries that were already served from it the time to finish.
// The build's record stays, with its partitions cleared.

// DefaultGCGrace is how long the objects of a replaced build are kept.
const DefaultGCGrace = 10 * time.Minute

// gcEvery is how often Reap collects.
const gcEvery = time.Minute

// WithObjects gives the service the materialization store, opened when
// first needed, so that it deletes the objects of builds that no longer
// serve. Without it nothing is deleted.
func WithObjects(open func(ctx context.Context) (storage.Store, error)) Option {
	return func(s *Service) { s.objects = open }
}

// Collect deletes the objects of builds replaced more than GCGrace ago and
// returns how many objects it deleted. A pre-aggregate with a build queued
// or building is left alone this pass (a window build may be keeping
// partitions of the build it replaces).
func (s *Service) Collect(ctx context.Context) (int, error) {
	if s.objects == nil {
		return 0, nil
	}
	projects, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Project, error) { return q.ProjectList(ctx) })
	if err != nil {
		return 0, err
	}
	now := s.now()
	deleted := 0
	for _, p := range projects {
		var active, list []store.PreAggBuild
		err := s.st.Read(ctx, func(q store.Querier) error {
			var err error
			if active, err = q.BuildsActive(ctx, p.ProjectID); err != nil {
				return err
			}
			list, err = q.BuildList(ctx, p.ProjectID, "", "", 0, reapBatch)
			return err
		})
		if err != nil {
			return deleted, err
		}
		inUse := map[string]bool{}
		for _, a := range active {
			for _, o := range objectsOf(a) {
				inUse[o.Object] = true
			}
		}
		busy := map[string]bool{}
		for _, b := range list {
			if b.Status == api.BuildQueued || b.Status == api.BuildBuilding {
				busy[b.Model+"/"+b.PreAggregate] = true
			}
		}
		for _, b := range list {
			// UpdatedAt: when it was replaced (promotion touches the
			// superseded row), or when it failed.
			if (b.Status != api.BuildSuperseded && b.Status != api.BuildFailed) || now.Sub(b.UpdatedAt) < s.cfg.GCGrace ||
				busy[b.Model+"/"+b.PreAggregate] {
				continue
			}
			objs := objectsOf(b)
			if len(objs) == 0 {
				continue
			}
			st, err := s.objects(ctx)
			if err != nil {
				return deleted, err
			}
			for _, o := range objs {
				if inUse[o.Object] {
					continue
				}
				if err := st.Delete(ctx, o.Object); err != nil {
					return deleted, err
				}
				deleted++
			}
			none := json.RawMessage("[]")
			err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
				_, err := tx.BuildTransition(ctx, b.BuildUUID, []api.BuildStatus{b.Status}, b.Status, store.BuildUpdate{Partitions: none}, now)
				return err
			})
			if err != nil {
				return deleted, err
			}
		}
	}
	if deleted > 0 {
		s.log.Info("deleted the objects of replaced pre-aggregate builds", "objects", deleted)
	}
	return deleted, nil
}

func objectsOf(b store.PreAggBuild) []api.PartitionObject {
	var out []api.PartitionObject
	if len(b.Partitions) > 0 {
		_ = json.Unmarshal(b.Partitions, &out)
	}
	return out
}
