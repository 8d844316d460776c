package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
)

func queryCmd() *cobra.Command {
	var cf clientFlags
	var project, format string
	var background, wait, invalidate bool
	var pageSize int
	cmd := &cobra.Command{
		Use:   "query SQL",
		Short: "Run SQL against a project's warehouse (asynchronously) and print the rows",
		Long: `Submit SQL to a project's warehouse. Without --wait it prints the query's
id and returns; with --wait it polls until the query ends and prints every
row (all pages) as a table, JSON or CSV. --background uses the background
lane, which never delays interactive queries.`,
		Example: `  millrace query "select 1 as one" --project analytics --wait
  millrace query "select * from orders" --project analytics --wait --format csv > orders.csv`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if project == "" {
				return fmt.Errorf("--project is required (list them with GET /api/v2/projects)")
			}
			switch format {
			case "table", "json", "csv":
			default:
				return fmt.Errorf("--format must be table, json or csv, got %q", format)
			}
			c := cf.client()
			lane := "interactive"
			if background {
				lane = "background"
			}
			sub, err := c.QuerySubmit(cmd.Context(), project, args[0], lane, invalidate)
			if err != nil {
				return err
			}
			if !wait {
				if cf.json {
					return printJSON(cmd.OutOrStdout(), sub)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "query %s submitted (cache hit: %v); poll with --wait or GET /api/v2/projects/%s/query/%s\n",
					sub.QueryUUID, sub.CacheMetadata.CacheHit, project, sub.QueryUUID)
				return nil
			}
			var first api.QueryPage
			progress := cmd.ErrOrStderr()
			start, lastStatus, lastLine := time.Now(), api.QueryStatus(""), time.Now()
			fmt.Fprintf(progress, "query %s submitted (cache hit: %v)\n", sub.QueryUUID, sub.CacheMetadata.CacheHit)
			for {
				first, err = c.QueryGet(cmd.Context(), project, sub.QueryUUID, 1, pageSize)
				if err != nil {
					return err
				}
				elapsed := time.Since(start).Round(100 * time.Millisecond)
				done := first.Status != api.QueryPending && first.Status != api.QueryQueued && first.Status != api.QueryExecuting
				// A line per status change, and one every 5s while it
				// stays, so a slow warehouse never looks like a hang.
				if first.Status != lastStatus || time.Since(lastLine) >= 5*time.Second {
					fmt.Fprintf(progress, "query %s %s after %s\n", sub.QueryUUID, first.Status, elapsed)
					lastStatus, lastLine = first.Status, time.Now()
				}
				if done {
					break
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
			if first.Status != api.QueryReady {
				msg := fmt.Sprintf("query %s %s", sub.QueryUUID, first.Status)
				if first.Error != "" {
					msg += ": " + first.Error
				}
				return exitError{code: 1, msg: msg}
			}
			rows := first.Rows
			for p := first.NextPage; p != nil; {
				next, err := c.QueryGet(cmd.Context(), project, sub.QueryUUID, *p, pageSize)
				if err != nil {
					return err
				}
				rows = append(rows, next.Rows...)
				p = next.NextPage
			}
			return printRows(cmd.OutOrStdout(), format, first.Columns, rows)
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringVar(&project, "project", "", "Project whose warehouse runs the query")
	cmd.Flags().StringVar(&format, "format", "table", "Output format with --wait: table, json or csv")
	cmd.Flags().BoolVar(&background, "background", false, "Use the background lane")
	cmd.Flags().BoolVar(&wait, "wait", false, "Wait for the result and print it")
	cmd.Flags().BoolVar(&invalidate, "invalidate-cache", false, "Run it even if a cached result is fresh")
	cmd.Flags().IntVar(&pageSize, "page-size", 5000, "Rows fetched per request while printing")
	return cmd
}

func printRows(w io.Writer, format string, cols []api.Column, rows []map[string]any) error {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	if len(names) == 0 && len(rows) > 0 {
		for k := range rows[0] {
			names = append(names, k)
		}
		sort.Strings(names)
	}
	cell := func(v any) string {
		switch v := v.(type) {
		case nil:
			return ""
		case string:
			return v
		case map[string]any, []any:
			b, _ := json.Marshal(v)
			return string(b)
		}
		return fmt.Sprint(v)
	}
	switch format {
	case "json":
		return printJSON(w, rows)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(names)
		for _, r := range rows {
			rec := make([]string, len(names))
			for i, n := range names {
				rec[i] = cell(r[n])
			}
			_ = cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(names, "\t")))
	for _, r := range rows {
		rec := make([]string, len(names))
		for i, n := range names {
			rec[i] = cell(r[n])
		}
		fmt.Fprintln(tw, strings.Join(rec, "\t"))
	}
	fmt.Fprintf(tw, "(%d rows)\n", len(rows))
	return tw.Flush()
}

func doctorCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a running server: store, NATS, pending work, and queries waiting with no worker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := cf.client().Health(cmd.Context())
			if h.Status == "" && err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), h)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "server   %s\nstatus   %s\nstore    %s\nnats     %s\n", cf.server, h.Status, h.Store, h.NATS)
			if st := h.Stats; st != nil {
				fmt.Fprintf(out, "flows    %d running executions, %d pending commands, outbox %d\n", st.ExecutionsRunning, st.CommandsPending, st.OutboxDepth)
			}
			problems := 0
			if d := h.Detail; d != nil {
				if q := d.Queries; q != nil {
					fmt.Fprintf(out, "queries  %d queued, %d executing\n", q.Queued, q.Executing)
				}
				if d.QueriesStalled != "" {
					fmt.Fprintf(out, "PROBLEM  %s\n", d.QueriesStalled)
					problems++
				}
			}
			if h.Status != "ok" {
				problems++
			}
			if problems > 0 {
				return exitError{code: 1, msg: "the server is degraded; see above"}
			}
			fmt.Fprintln(out, "all good")
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}
