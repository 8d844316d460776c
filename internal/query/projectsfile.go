package query

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/warehouse"
)

// ProjectsFile is the shape of MILLRACE_PROJECTS_FILE (YAML or JSON):
//
//	projects:
//	  - name: analytics
//	    warehouse: {type: postgres, url: "${ANALYTICS_PG_URL}"}
//	    models:            # optional: the project's metrics layer
//	      - name: orders
//	        table: public.orders
//	        dimensions: [...]
//	        metrics: [...]
//
// ${VAR} references in a warehouse URL are expanded from the environment,
// so secrets need not be written into the file. Models are parsed by
// package semantic with the file's name and lines, so a bad definition
// is reported as file:line:col.
type ProjectsFile struct {
	Projects []ProjectDecl `yaml:"projects"`
}

// ProjectDecl is one project of the file.
type ProjectDecl struct {
	Name      string         `yaml:"name"`
	Warehouse warehouse.Conn `yaml:"warehouse"`
	// Models is kept as a node so that semantic.ParseModels sees its
	// lines; absent (Kind 0) means the project declares no models.
	Models yaml.Node `yaml:"models"`
}

// LoadProjects creates or updates every project the file declares, and
// stores their models. A file's models replace the ones the same file
// declared before: a model removed from the file is deleted (models put
// through the API are left alone). Every definition is checked before
// anything is written, and every problem is reported, as path:line:col.
// It returns how many projects it loaded.
func (s *Service) LoadProjects(ctx context.Context, path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("projects file (MILLRACE_PROJECTS_FILE): %w", err)
	}
	f, lines, err := parseProjectsFile(path, data)
	if err != nil {
		return 0, err
	}
	models := make([][]semantic.Model, len(f.Projects))
	var problems []string
	for i, p := range f.Projects {
		if p.Models.Kind == 0 {
			continue
		}
		ms, err := semantic.ParseModels(path, &p.Models)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		models[i] = ms
	}
	if len(problems) > 0 {
		return 0, fmt.Errorf("projects file %s: bad model definitions:\n%s", path, strings.Join(problems, "\n"))
	}
	for i, p := range f.Projects {
		p.Warehouse.URL = os.ExpandEnv(p.Warehouse.URL)
		proj, err := s.PutProject(ctx, p.Name, p.Warehouse)
		if err != nil {
			return i, fmt.Errorf("projects file %s:%d: project %q: %w", path, lines[i], p.Name, err)
		}
		names, pruned, err := s.putModels(ctx, proj, models[i], path, true)
		if err != nil {
			return i, fmt.Errorf("projects file %s:%d: project %q: models: %w", path, lines[i], p.Name, err)
		}
		if len(names) > 0 || len(pruned) > 0 {
			s.log.Info("models loaded", "project", p.Name, "file", path, "models", names, "removed", pruned)
		}
	}
	return len(f.Projects), nil
}

// parseProjectsFile decodes the file strictly (unknown keys refused) and
// returns the line of each project, for messages.
func parseProjectsFile(path string, data []byte) (ProjectsFile, []int, error) {
	var f ProjectsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return f, nil, fmt.Errorf("projects file %s: %w (want `projects: [{name, warehouse: {type, url}, models?: [...]}]`)", path, err)
	}
	var root yaml.Node
	lines := make([]int, len(f.Projects))
	if yaml.Unmarshal(data, &root) == nil && len(root.Content) == 1 && root.Content[0].Kind == yaml.MappingNode {
		m := root.Content[0]
		for k := 0; k+1 < len(m.Content); k += 2 {
			if m.Content[k].Value != "projects" || m.Content[k+1].Kind != yaml.SequenceNode {
				continue
			}
			for i, item := range m.Content[k+1].Content {
				if i < len(lines) {
					lines[i] = item.Line
				}
			}
		}
	}
	return f, lines, nil
}
