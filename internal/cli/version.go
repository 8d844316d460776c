package cli

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at link time:
//
//	go build -ldflags "-X github.com/millrace/millrace/internal/cli.version=v1.2.3" ./cmd/millrace
var version string

// versionInfo is what `millrace version --json` prints.
type versionInfo struct {
	Version  string `json:"version"`          // the release, or the module version ("(devel)")
	Commit   string `json:"commit,omitempty"` // the VCS revision the binary was built from
	Modified bool   `json:"modified"`         // built from a tree with uncommitted changes
	Time     string `json:"time,omitempty"`   // the commit's time
	Go       string `json:"go"`               // the Go toolchain
}

func buildVersion() versionInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return versionInfo{Version: orDefault(version, "(unknown)")}
	}
	vi := versionInfo{Version: orDefault(version, orDefault(bi.Main.Version, "(devel)")), Go: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			vi.Commit = s.Value
		case "vcs.modified":
			vi.Modified = s.Value == "true"
		case "vcs.time":
			vi.Time = s.Value
		}
	}
	return vi
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Version is the binary's version: the one given at link time, else the
// module version and VCS revision the Go toolchain recorded.
func Version() string {
	if version != "" {
		return version
	}
	vi := buildVersion()
	if vi.Go == "" {
		return vi.Version
	}
	if vi.Commit == "" {
		return vi.Version + " " + vi.Go
	}
	modified := ""
	if vi.Modified {
		modified = "+dirty"
	}
	parts := []string{vi.Version, "commit " + shortRev(vi.Commit) + modified}
	if vi.Time != "" {
		parts = append(parts, vi.Time)
	}
	return strings.Join(append(parts, vi.Go), " ")
}

func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

// versionCmd is `millrace version`, the same line as `millrace --version`
// (image smoke tests and support requests ask for it); --json for scripts.
func versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return printJSON(cmd.OutOrStdout(), buildVersion())
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "millrace %s\n", Version())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "Print the version, commit, build time and Go version as JSON")
	return cmd
}
