package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
)

func registerCmd() *cobra.Command {
	var cf clientFlags
	var dir string
	cmd := &cobra.Command{
		Use:   "register [FILE]",
		Short: "Register a playbook (or every *.yaml under --dir) as a new catalog version",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var files []string
			switch {
			case dir != "" && len(args) == 0:
				err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
					if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
						files = append(files, p)
					}
					return err
				})
				if err != nil {
					return err
				}
			case dir == "" && len(args) == 1:
				files = args
			default:
				return fmt.Errorf("give one FILE or --dir DIR")
			}
			c := cf.client()
			out := []api.Registered{}
			var errs []error
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				r, err := c.RegisterFile(cmd.Context(), f, string(data))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", f, err))
					if !cf.json && len(files) > 1 {
						fmt.Fprintln(cmd.ErrOrStderr(), errs[len(errs)-1])
					}
					continue
				}
				out = append(out, r)
				if !cf.json {
					fmt.Fprintf(cmd.OutOrStdout(), "registered %s version %d (catalog_id %d) from %s\n", r.Path, r.Version, r.CatalogID, f)
					printWarnings(cmd.ErrOrStderr(), f, r.Warnings)
				}
			}
			switch {
			case len(errs) == 1 && len(files) == 1:
				return errs[0] // with --json, the API's error envelope
			case len(errs) > 0 && cf.json:
				return fmt.Errorf("%d of %d playbooks failed to register (%d registered): %w", len(errs), len(files), len(out), errors.Join(errs...))
			case len(errs) > 0:
				return exitError{code: 1, msg: fmt.Sprintf("%d of %d playbooks failed to register", len(errs), len(files))}
			case cf.json:
				return printJSON(cmd.OutOrStdout(), out)
			}
			return nil
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringVar(&dir, "dir", "", "Register every .yaml/.yml file under this directory")
	return cmd
}

func catalogCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "catalog", Short: "List or show registered playbooks"}
	var lf clientFlags
	list := &cobra.Command{
		Use: "list", Short: "List the latest version of every playbook", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries, err := lf.client().Catalog(cmd.Context())
			if err != nil {
				return err
			}
			if lf.json {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PATH\tVERSION\tNAME\tREGISTERED")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", e.Path, e.Version, e.Name, e.CreatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	lf.bind(list)
	var gf clientFlags
	var version int
	get := &cobra.Command{
		Use: "get PATH", Short: "Print a playbook's YAML (latest version unless --version)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := gf.client().CatalogGet(cmd.Context(), args[0], version)
			if err != nil {
				return err
			}
			if gf.json {
				return printJSON(cmd.OutOrStdout(), e)
			}
			_, err = io.WriteString(cmd.OutOrStdout(), e.Content)
			return err
		},
	}
	gf.bind(get)
	get.Flags().IntVar(&version, "version", 0, "Version to show (0 = latest)")
	cmd.AddCommand(list, get)
	return cmd
}

// parseSets turns --set k=v pairs into a payload; values that parse as JSON
// (numbers, booleans, objects) keep their type.
func parseSets(sets []string, payload string) (map[string]any, error) {
	out := map[string]any{}
	if payload != "" {
		if err := json.Unmarshal([]byte(payload), &out); err != nil {
			return nil, fmt.Errorf("--payload must be a JSON object: %w", err)
		}
	}
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--set %q: want key=value", s)
		}
		var jv any
		if json.Unmarshal([]byte(v), &jv) == nil {
			out[k] = jv
		} else {
			out[k] = v
		}
	}
	return out, nil
}

func executeCmd() *cobra.Command {
	var cf clientFlags
	var version int
	var sets []string
	var payload string
	var watch bool
	var idemKey string
	cmd := &cobra.Command{
		Use:   "execute PATH",
		Short: "Start an execution of a registered playbook",
		Long:  "Start an execution of a registered playbook. With --watch, follow it live and exit non-zero unless it completes.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parseSets(sets, payload)
			if err != nil {
				return err
			}
			c := cf.client()
			st, err := c.Execute(withSubmitKey(cmd.Context(), &idemKey), args[0], version, p)
			if err != nil {
				return submitFailed(err, idemKey)
			}
			if !watch {
				if cf.json {
					return printJSON(cmd.OutOrStdout(), st)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "execution %d %s\n", st.ExecutionID, st.Status)
				return nil
			}
			// The id first, so a watcher can come back to it (status,
			// events, cancel) after Ctrl-C; on stderr with --json, where
			// stdout carries only the final record.
			idOut := cmd.OutOrStdout()
			if cf.json {
				idOut = cmd.ErrOrStderr()
			}
			fmt.Fprintf(idOut, "execution %d started; following it (Ctrl-C stops following, not the execution)\n", st.ExecutionID)
			return follow(cmd.Context(), c, st.ExecutionID, cmd.OutOrStdout(), cf.json)
		},
	}
	cf.bind(cmd)
	cmd.Flags().IntVar(&version, "version", 0, "Playbook version (0 = latest)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "Override a workload key: key=value (repeatable)")
	cmd.Flags().StringVar(&payload, "payload", "", "Workload overrides as a JSON object")
	cmd.Flags().BoolVar(&watch, "watch", false, "Follow the execution until it ends")
	cmd.Flags().StringVar(&idemKey, "idempotency-key", "", "Idempotency-Key of the submit (default: a fresh one); a rerun with the key of a submit whose answer was lost returns its execution instead of starting another")
	return cmd
}

// runOnce registers file on server (with token), executes it and follows it.
func runOnce(ctx context.Context, cmd *cobra.Command, server, token, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	c := client.New(server).WithToken(token)
	reg, err := c.RegisterFile(ctx, file, string(data))
	if err != nil {
		return fmt.Errorf("register %s: %w", file, err)
	}
	printWarnings(cmd.ErrOrStderr(), file, reg.Warnings)
	st, err := c.Execute(ctx, reg.Path, reg.Version, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "execution %d of %s v%d started\n", st.ExecutionID, reg.Path, reg.Version)
	return follow(ctx, c, st.ExecutionID, cmd.OutOrStdout(), false)
}

// follow prints an execution's events as they happen and its result at the
// end. It fails unless the execution completed.
func follow(ctx context.Context, c *client.Client, id int64, out io.Writer, asJSON bool) error {
	seen := 0
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		evs, err := c.Events(ctx, id)
		if err != nil {
			return err
		}
		if !asJSON {
			for _, e := range evs[seen:] {
				printEvent(out, e)
			}
		}
		seen = len(evs)
		ex, err := c.Execution(ctx, id)
		if err != nil {
			return err
		}
		if ex.Status != api.ExecRunning {
			if asJSON {
				_ = printJSON(out, ex)
			} else if len(ex.Result) > 0 {
				fmt.Fprintf(out, "result: %s\n", ex.Result)
			}
			if ex.Status != api.ExecCompleted {
				return exitError{code: 1, msg: fmt.Sprintf("execution %d %s: %s", id, ex.Status, ex.Error), reported: asJSON}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func printEvent(out io.Writer, e api.Event) {
	ts := e.CreatedAt.Local().Format("15:04:05.000")
	switch e.EventType {
	case api.EvCommandIssued, api.EvCommandHeartbeat, api.EvStepExit:
		return // the interesting moments are claim, start and finish
	case api.EvCommandClaimed:
		fmt.Fprintf(out, "%s  %-10s claimed by %s (attempt %d)\n", ts, e.Step, e.WorkerID, e.Attempt)
	case api.EvCommandStarted:
		fmt.Fprintf(out, "%s  %-10s started\n", ts, e.Step)
	case api.EvCommandCompleted:
		fmt.Fprintf(out, "%s  %-10s completed\n", ts, e.Step)
	case api.EvCommandFailed:
		fmt.Fprintf(out, "%s  %-10s FAILED: %s\n", ts, e.Step, e.Error)
	default:
		line := fmt.Sprintf("%s  %s", ts, e.EventType)
		if e.Error != "" {
			line += ": " + e.Error
		}
		fmt.Fprintln(out, line)
	}
}

func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("execution id must be a positive integer, got %q", s)
	}
	return id, nil
}

func statusCmd() *cobra.Command {
	var cf clientFlags
	var watch bool
	cmd := &cobra.Command{
		Use: "status ID", Short: "Show an execution (with --watch, follow it until it ends)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c := cf.client()
			if watch {
				return follow(cmd.Context(), c, id, cmd.OutOrStdout(), cf.json)
			}
			ex, err := c.Execution(cmd.Context(), id)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), ex)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "execution %d  %s v%d  %s  started %s\n", ex.ExecutionID, ex.Path, ex.Version, ex.Status, ex.StartedAt.Format(time.RFC3339))
			if ex.Error != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "error: %s\n", ex.Error)
			}
			if len(ex.Result) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "result: %s\n", ex.Result)
			}
			return nil
		},
	}
	cf.bind(cmd)
	cmd.Flags().BoolVar(&watch, "watch", false, "Follow until the execution ends")
	return cmd
}

func eventsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use: "events ID", Short: "List an execution's events", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			evs, err := cf.client().Events(cmd.Context(), id)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), evs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "EVENT_ID\tTYPE\tSTEP\tSTATUS\tWORKER\tATTEMPT\tTIME")
			for _, e := range evs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", e.EventID, e.EventType, e.Step, e.Status, e.WorkerID, e.Attempt, e.CreatedAt.Format(time.RFC3339Nano))
			}
			return tw.Flush()
		},
	}
	cf.bind(cmd)
	return cmd
}

func executionsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "executions", Short: "List executions"}
	var cf clientFlags
	var page, size int
	var status, path string
	list := &cobra.Command{
		Use: "list", Short: "List executions, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := cf.client().ExecutionsFiltered(cmd.Context(), page, size, status, path)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), p)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "EXECUTION_ID\tPATH\tVERSION\tSTATUS\tSTARTED")
			for _, e := range p.Executions {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", e.ExecutionID, e.Path, e.Version, e.Status, e.StartedAt.Format(time.RFC3339))
			}
			fmt.Fprintf(tw, "page %d of %d executions\n", p.Page, p.Total)
			return tw.Flush()
		},
	}
	cf.bind(list)
	list.Flags().IntVar(&page, "page", 1, "Page number")
	list.Flags().IntVar(&size, "page-size", 50, "Executions per page")
	list.Flags().StringVar(&status, "status", "", "Only executions of this status (running, completed, failed, cancelled)")
	list.Flags().StringVar(&path, "path", "", "Only executions of this playbook path (a trailing * matches a prefix)")
	cmd.AddCommand(list, executionFailCmd())
	return cmd
}

func cancelCmd() *cobra.Command {
	var cf clientFlags
	var cascade bool
	cmd := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a running execution (with --cascade, its child executions too)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			ex, err := cf.client().CancelCascade(cmd.Context(), id, cascade)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), ex)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "execution %d %s\n", ex.ExecutionID, ex.Status)
			return nil
		},
	}
	cf.bind(cmd)
	cmd.Flags().BoolVar(&cascade, "cascade", false, "Also cancel running child executions (started by playbook tools)")
	return cmd
}
