package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
)

// SourceAPI is the source recorded for models stored through the API.
const SourceAPI = "api"

// PutModels stores models in project, each replacing the model of the
// same name. The models are already parsed and validated (package
// semantic). source says where they were declared: SourceAPI, or a file
// path, to which each model's line is appended ("projects.yaml:12"). It
// returns the names stored, in the order given.
func (s *Service) PutModels(ctx context.Context, project string, models []semantic.Model, source string) ([]string, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return nil, err
	}
	names, _, err := s.putModels(ctx, p, models, source, false)
	return names, err
}

// putModels writes models in one transaction. With prune, the project's
// models that came from the same file (source) but are not in models any
// more are deleted: the file is the truth for what it declares. It
// returns the names stored and the names pruned.
func (s *Service) putModels(ctx context.Context, p store.Project, models []semantic.Model, source string, prune bool) ([]string, []string, error) {
	rows := make([]store.SemanticModel, 0, len(models))
	names := make([]string, 0, len(models))
	keep := map[string]bool{}
	for i := range models {
		m := &models[i]
		def, err := json.Marshal(m)
		if err != nil {
			return nil, nil, fmt.Errorf("model %s: %w", m.Name, err)
		}
		src := source
		if source != SourceAPI && m.Pos.Line > 0 {
			src = fmt.Sprintf("%s:%d", source, m.Pos.Line)
		}
		rows = append(rows, store.SemanticModel{ProjectID: p.ProjectID, Name: m.Name, Definition: def,
			Hash: semantic.ModelHash(m), Source: src, UpdatedAt: s.now()})
		names = append(names, m.Name)
		keep[m.Name] = true
	}
	var pruned []string
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		pruned = nil // a retried transaction starts over
		for _, r := range rows {
			if err := tx.ModelPut(ctx, r); err != nil {
				return err
			}
		}
		if !prune {
			return nil
		}
		old, err := tx.ModelList(ctx, p.ProjectID)
		if err != nil {
			return err
		}
		for _, o := range old {
			if keep[o.Name] || !strings.HasPrefix(o.Source, source+":") {
				continue
			}
			if err := tx.ModelDelete(ctx, p.ProjectID, o.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			pruned = append(pruned, o.Name)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return names, pruned, nil
}

// Models lists project's models by name.
func (s *Service) Models(ctx context.Context, project string) ([]semantic.Model, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return nil, err
	}
	rows, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.SemanticModel, error) {
		return q.ModelList(ctx, p.ProjectID)
	})
	if err != nil {
		return nil, err
	}
	out := make([]semantic.Model, 0, len(rows))
	for _, r := range rows {
		m, err := decodeModel(r)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// Model reads one model of project (ErrModelNotFound if absent).
func (s *Service) Model(ctx context.Context, project, name string) (semantic.Model, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return semantic.Model{}, err
	}
	m, _, err := s.modelOf(ctx, p, name)
	if errors.Is(err, store.ErrNotFound) {
		return m, errorf(ErrModelNotFound, "project %s has no model %q", project, name)
	}
	return m, err
}

// DeleteModel removes a model of project (ErrModelNotFound if absent).
// Its pre-aggregates stop matching at once; their builds are left to the
// builds service.
func (s *Service) DeleteModel(ctx context.Context, project, name string) error {
	p, err := s.Project(ctx, project)
	if err != nil {
		return err
	}
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		return tx.ModelDelete(ctx, p.ProjectID, name)
	})
	if errors.Is(err, store.ErrNotFound) {
		return errorf(ErrModelNotFound, "project %s has no model %q", project, name)
	}
	return err
}

// modelOf reads a model of p; store.ErrNotFound if absent.
func (s *Service) modelOf(ctx context.Context, p store.Project, name string) (semantic.Model, store.SemanticModel, error) {
	row, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.SemanticModel, error) {
		return q.ModelGet(ctx, p.ProjectID, name)
	})
	if err != nil {
		return semantic.Model{}, row, err
	}
	m, err := decodeModel(row)
	return m, row, err
}

func decodeModel(r store.SemanticModel) (semantic.Model, error) {
	var m semantic.Model
	if err := json.Unmarshal(r.Definition, &m); err != nil {
		return m, fmt.Errorf("stored model %s is not readable: %w", r.Name, err)
	}
	return m, nil
}
