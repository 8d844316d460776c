package query

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/millrace/millrace/internal/warehouse"
)

// ProjectsFile is the shape of MILLRACE_PROJECTS_FILE (YAML or JSON):
//
//	projects:
//	  - name: analytics
//	    warehouse: {type: postgres, url: "${ANALYTICS_PG_URL}"}
//
// ${VAR} references are expanded from the environment, so secrets need
// not be written into the file.
type ProjectsFile struct {
	Projects []struct {
		Name      string         `yaml:"name"`
		Warehouse warehouse.Conn `yaml:"warehouse"`
	} `yaml:"projects"`
}

// LoadProjects creates or updates every project the file declares.
func (s *Service) LoadProjects(ctx context.Context, path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("projects file (MILLRACE_PROJECTS_FILE): %w", err)
	}
	var f ProjectsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return 0, fmt.Errorf("projects file %s: %w (want `projects: [{name, warehouse: {type, url}}]`)", path, err)
	}
	for i, p := range f.Projects {
		p.Warehouse.URL = os.ExpandEnv(p.Warehouse.URL)
		if _, err := s.PutProject(ctx, p.Name, p.Warehouse); err != nil {
			return i, fmt.Errorf("projects file %s, project %d (%q): %w", path, i+1, p.Name, err)
		}
	}
	return len(f.Projects), nil
}
