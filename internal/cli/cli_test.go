package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// docs/configuration.md must show exactly what the code does.
func TestConfigurationDocIsCurrent(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), ConfigReference()) {
		t.Fatal("docs/configuration.md is out of date; regenerate the table between the GENERATED markers with `go run ./cmd/millrace config`")
	}
}

// Every command has help, and every flag of the roles names its variable.
func TestHelpEverywhere(t *testing.T) {
	t.Parallel()
	root := NewRoot(&bytes.Buffer{}, &bytes.Buffer{})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" {
			t.Errorf("command %q has no short help", c.CommandPath())
		}
		var out bytes.Buffer
		c.SetOut(&out)
		if err := c.Help(); err != nil || out.Len() == 0 {
			t.Errorf("%s --help: %v", c.CommandPath(), err)
		}
		for _, sub := range c.Commands() {
			if sub.Name() != "help" && sub.Name() != "completion" {
				walk(sub)
			}
		}
	}
	walk(root)
	for _, name := range []string{"server", "worker", "dev"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(f.Usage, "[$") && f.Name != "run" && f.Name != "once" && f.Name != "help" {
				t.Errorf("%s --%s does not name its environment variable", name, f.Name)
			}
		})
	}
}

func TestBadEnvironmentValueIsNamed(t *testing.T) {
	t.Setenv("NATS_WORKER_CONCURRENCY", "lots")
	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetArgs([]string{"worker"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "NATS_WORKER_CONCURRENCY") {
		t.Fatalf("err = %v, want it to name NATS_WORKER_CONCURRENCY", err)
	}
}

func TestParseSets(t *testing.T) {
	t.Parallel()
	got, err := parseSets([]string{"n=3", "name=bob", "obj={\"a\":1}"}, `{"keep": true, "n": 1}`)
	if err != nil {
		t.Fatal(err)
	}
	if got["n"] != float64(3) || got["name"] != "bob" || got["keep"] != true || got["obj"].(map[string]any)["a"] != float64(1) {
		t.Fatalf("parseSets = %v", got)
	}
	if _, err := parseSets([]string{"novalue"}, ""); err == nil {
		t.Fatal("want an error for --set without =")
	}
	if _, err := parseSets(nil, "[1]"); err == nil {
		t.Fatal("want an error for a non-object payload")
	}
}
