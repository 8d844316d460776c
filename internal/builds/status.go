package builds

import (
	"context"
	"encoding/json"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
)

// ToAPI is a build as the API shows it.
func ToAPI(b store.PreAggBuild, project string) api.PreAggBuild {
	out := api.PreAggBuild{BuildUUID: b.BuildUUID, Project: project, Model: b.Model, PreAggregate: b.PreAggregate,
		Status: b.Status, Trigger: b.Trigger, Rows: b.Rows, Bytes: b.Bytes, Error: b.Error, WorkerID: b.WorkerID,
		CreatedAt: b.CreatedAt, StartedAt: b.StartedAt, DataAsOf: b.DataAsOf}
	if len(b.Partitions) > 0 {
		_ = json.Unmarshal(b.Partitions, &out.Partitions)
	}
	if len(b.Rebuild) > 0 {
		_ = json.Unmarshal(b.Rebuild, &out.Rebuilt)
	}
	if b.EndedAt != nil && b.Status != api.BuildQueued && b.Status != api.BuildBuilding {
		out.BuiltAt = b.EndedAt
		if b.StartedAt != nil {
			out.DurationMs = b.EndedAt.Sub(*b.StartedAt).Milliseconds()
		}
	}
	return out
}

// List returns every pre-aggregate the project declares, with its active
// build, its newest build and the error of a failure since the active one.
func (s *Service) List(ctx context.Context, project string) (api.PreAggList, error) {
	p, err := s.projects.Project(ctx, project)
	if err != nil {
		return api.PreAggList{}, err
	}
	models, err := s.models(ctx, p.ProjectID)
	if err != nil {
		return api.PreAggList{}, err
	}
	active, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.PreAggBuild, error) { return q.BuildsActive(ctx, p.ProjectID) })
	if err != nil {
		return api.PreAggList{}, err
	}
	out := api.PreAggList{PreAggregates: []api.PreAggInfo{}}
	for i := range models {
		m := &models[i]
		for j := range m.PreAggregates {
			pa := &m.PreAggregates[j]
			t := target{project: p, model: m, preagg: pa, hash: semantic.PreAggHash(m, pa)}
			st, err := s.state(ctx, t)
			if err != nil {
				return out, err
			}
			list, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.PreAggBuild, error) { return recent(ctx, q, t) })
			if err != nil {
				return out, err
			}
			r := pa.Refresh
			ps := api.PreAggInfo{Model: m.Name, Name: pa.Name, Definition: *pa, DefHash: t.hash}
			if r.KeySQL != "" {
				ps.KeyValue, ps.KeyCheckedAt = st.KeyValue, st.KeyCheckedAt
			}
			if r.Cron != "" {
				ps.NextRefreshAt = st.NextCronAt
			}
			var act *store.PreAggBuild
			for k := range active {
				if active[k].Model == m.Name && active[k].PreAggregate == pa.Name {
					act = &active[k]
				}
			}
			if act != nil {
				a := ToAPI(*act, p.Name)
				ps.Active, ps.ActiveOutdated = &a, act.DefHash != t.hash
			}
			if len(list) > 0 {
				l := ToAPI(list[0], p.Name)
				ps.Last = &l
			}
			for _, b := range list {
				if act != nil && !b.CreatedAt.After(act.CreatedAt) {
					break // newest first: older than the active build
				}
				if b.Status == api.BuildFailed {
					ps.LastError = b.Error
					break
				}
			}
			out.PreAggregates = append(out.PreAggregates, ps)
		}
	}
	return out, nil
}

// History lists a project's builds, newest first; model and name filter
// when set.
func (s *Service) History(ctx context.Context, project, model, name string, offset, limit int) (api.PreAggBuildList, error) {
	p, err := s.projects.Project(ctx, project)
	if err != nil {
		return api.PreAggBuildList{}, err
	}
	list, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildList(ctx, p.ProjectID, model, name, offset, limit)
	})
	if err != nil {
		return api.PreAggBuildList{}, err
	}
	out := api.PreAggBuildList{Builds: make([]api.PreAggBuild, 0, len(list))}
	for _, b := range list {
		out.Builds = append(out.Builds, ToAPI(b, p.Name))
	}
	return out, nil
}

// ProjectBuild returns a build of project (ErrBuildNotFound if it belongs
// elsewhere).
func (s *Service) ProjectBuild(ctx context.Context, project, uuid string) (api.PreAggBuild, error) {
	p, err := s.projects.Project(ctx, project)
	if err != nil {
		return api.PreAggBuild{}, err
	}
	b, err := s.Get(ctx, uuid)
	if err == nil && b.ProjectID != p.ProjectID {
		err = errorf(ErrBuildNotFound, "build %s does not exist in project %s", uuid, project)
	}
	if err != nil {
		return api.PreAggBuild{}, err
	}
	return ToAPI(b, p.Name), nil
}
