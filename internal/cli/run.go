package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/local"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/tools"
)

func runCmd() *cobra.Command {
	var cf clientFlags
	var sets []string
	var payload, runtime, credFile string
	cmd := &cobra.Command{
		Use:   "run FILE|PATH",
		Short: "Run a playbook to the end and print its result (locally, or on a server)",
		Long: `Run a playbook and follow it until it ends, showing each step; exit non-zero
unless it completes. Prints the execution's result (the result of the last
step that ran), or with --json the whole execution record.

--runtime local (default) runs it in this process: no server, no NATS. The
playbooks next to FILE are registered too, so playbook tools can call them.
Credentials come from --credentials FILE (YAML or JSON: name -> fields).

--runtime distributed registers FILE on the server (or runs the registered
PATH) and follows it there.`,
		Example: `  millrace run examples/loop.yaml --set count=5
  millrace run examples/branching.yaml --runtime distributed --server http://127.0.0.1:8082`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parseSets(sets, payload)
			if err != nil {
				return err
			}
			switch runtime {
			case "local":
				return runLocal(cmd, args[0], p, credFile, cf.json)
			case "distributed":
				return runDistributed(cmd, cf, args[0], p)
			}
			return fmt.Errorf("--runtime must be local or distributed, got %q", runtime)
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringArrayVar(&sets, "set", nil, "Override a workload key: key=value (repeatable; JSON values keep their type)")
	cmd.Flags().StringVar(&payload, "payload", "", "Workload overrides as a JSON object")
	cmd.Flags().StringVar(&runtime, "runtime", "local", "local (in this process) or distributed (on --server)")
	cmd.Flags().StringVar(&credFile, "credentials", "", "Local runtime: file of credentials (YAML/JSON map name -> fields)")
	return cmd
}

func runLocal(cmd *cobra.Command, file string, payload map[string]any, credFile string, asJSON bool) error {
	creds := map[string]map[string]any{}
	if credFile != "" {
		b, err := os.ReadFile(credFile)
		if err != nil {
			return err
		}
		if err := yaml.Unmarshal(b, &creds); err != nil {
			return fmt.Errorf("--credentials %s: want a mapping of name -> fields: %w", credFile, err)
		}
	}
	// The local runtime registers the file itself; its warnings are shown
	// here, before the run's events.
	if b, err := os.ReadFile(file); err == nil {
		if pb, err := playbook.Parse(file, b, tools.Kinds()); err == nil {
			printWarnings(cmd.ErrOrStderr(), file, pb.Warnings)
		}
	}
	out := cmd.OutOrStdout()
	opts := local.Options{Credentials: creds, Skipped: func(f string, problems error) {
		// Said on stderr, so that a child call to it failing later
		// ("not registered") has its cause in view; stdout stays the result.
		first, _, _ := strings.Cut(problems.Error(), "\n")
		fmt.Fprintf(cmd.ErrOrStderr(), "skipped %s: it does not validate, so playbook tools cannot call it (%s; millrace validate %s lists every problem)\n", f, first, f)
	}}
	if !asJSON {
		opts.Progress = func(e api.Event) { printEvent(out, e) }
	}
	ex, err := local.Run(cmd.Context(), file, payload, opts)
	if err != nil {
		return err
	}
	return finishRun(cmd, ex, asJSON)
}

func finishRun(cmd *cobra.Command, ex api.Execution, asJSON bool) error {
	out := cmd.OutOrStdout()
	if asJSON {
		_ = printJSON(out, ex)
	} else if len(ex.Result) > 0 {
		fmt.Fprintf(out, "%s\n", ex.Result)
	}
	if ex.Status != api.ExecCompleted {
		return exitError{code: 1, msg: fmt.Sprintf("execution %d %s: %s", ex.ExecutionID, ex.Status, ex.Error), reported: asJSON}
	}
	return nil
}

func runDistributed(cmd *cobra.Command, cf clientFlags, target string, payload map[string]any) error {
	c := cf.client()
	path, version := target, 0
	if b, err := os.ReadFile(target); err == nil {
		reg, err := c.RegisterFile(cmd.Context(), target, string(b))
		if err != nil {
			return fmt.Errorf("register %s: %w", target, err)
		}
		printWarnings(cmd.ErrOrStderr(), target, reg.Warnings)
		path, version = reg.Path, reg.Version
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	st, err := c.Execute(cmd.Context(), path, version, payload)
	if err != nil {
		return err
	}
	return follow(cmd.Context(), c, st.ExecutionID, cmd.OutOrStdout(), cf.json)
}

// validateFile parses file as the server would; the error lists every
// problem as file:line:col.
func validateFile(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	_, err = playbook.Parse(file, b, tools.Kinds())
	return err
}

func validateCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check playbooks without running them: every problem with file:line:col and a fix",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			bad := 0
			report := map[string][]playbook.Problem{}
			for _, f := range args {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				// Warnings (marked "warning": true) do not fail validate,
				// and are shown beside the errors when there are some.
				_, errs, warns := playbook.Check(f, b, tools.Kinds())
				all := append(append(playbook.Problems{}, errs...), warns...)
				all.Sort()
				report[f] = all
				if len(errs) > 0 {
					bad++
				}
				if !asJSON {
					for _, p := range all {
						fmt.Fprintln(out, p.Error())
					}
					if len(errs) == 0 {
						fmt.Fprintf(out, "%s: ok\n", f)
					}
				}
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				_ = enc.Encode(report)
			}
			if bad > 0 {
				return exitError{code: 1, msg: fmt.Sprintf("%d of %d playbooks have problems", bad, len(args)), reported: asJSON}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "Print problems as JSON")
	return cmd
}

// printWarnings shows what validating file flagged without refusing it.
// The server names every file playbook.yaml; the user's own name is shown.
func printWarnings(w io.Writer, file string, warns []playbook.Problem) {
	for _, p := range warns {
		p.File = file
		fmt.Fprintln(w, p.Error())
	}
}
