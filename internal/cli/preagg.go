package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
)

func preaggCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "preagg",
		Short: "Show pre-aggregates and their builds, refresh one, or audit which queries they serve",
		Long: `Pre-aggregates are materializations of a model's metrics at a grain, declared
under the model (pre_aggregates:) and served from DuckDB by pre-aggregate
workers (millrace worker --stream pre-aggregate, or the server itself with
NATS_ENABLED=false). These commands read and drive them through the API.`,
	}
	cmd.AddCommand(preaggListCmd(), preaggStatusCmd(), preaggRefreshCmd(), preaggAuditCmd())
	return cmd
}

// preaggFlags are --project and the client flags.
type preaggFlags struct {
	clientFlags
	project string
}

func (p *preaggFlags) bind(cmd *cobra.Command) {
	p.clientFlags.bind(cmd)
	cmd.Flags().StringVar(&p.project, "project", "", "Project whose models declare the pre-aggregates (required)")
}

func (p *preaggFlags) check() error {
	if p.project == "" {
		return fmt.Errorf("--project is required")
	}
	return nil
}

func preaggListCmd() *cobra.Command {
	var pf preaggFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List declared pre-aggregates with the build serving each (rows, bytes, built at, data as of, duration)",
		Long: `List every pre-aggregate the project's models declare, with its active build
(the one serving queries: rows, bytes, when it was built, how fresh its data
is, how long it took) and its latest build when that is not the active one
(queued, building, or failed, with the error; a failed build never replaces
the active one). A pre-aggregate with no active build serves nothing: its
queries miss with NO_ACTIVE_MATERIALIZATION.`,
		Example: `  millrace preagg list --project analytics
  millrace preagg list --project analytics --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(); err != nil {
				return err
			}
			list, err := pf.client().PreAggregates(cmd.Context(), pf.project)
			if err != nil {
				return err
			}
			if pf.json {
				return printJSON(cmd.OutOrStdout(), api.PreAggList{PreAggregates: list})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tPRE-AGGREGATE\tSERVING\tROWS\tBYTES\tBUILT AT\tDATA AS OF\tDURATION\tLATEST")
			for _, p := range list {
				serving, rows, size, built, asOf, dur := "no (never built)", "-", "-", "-", "-", "-"
				if a := p.Active; a != nil {
					serving = "yes"
					if p.ActiveOutdated {
						serving = "no (definition changed)"
					}
					rows, size, built, asOf, dur = fmt.Sprint(a.Rows), humanBytes(a.Bytes), stamp(a.BuiltAt), stamp(a.DataAsOf), msDuration(a.DurationMs)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Model, p.Name, serving, rows, size, built, asOf, dur, latest(p))
			}
			if len(list) == 0 {
				fmt.Fprintln(tw, "(no pre-aggregates: declare them under a model's pre_aggregates)")
			}
			return tw.Flush()
		},
	}
	pf.bind(cmd)
	return cmd
}

// latest describes a pre-aggregate's newest build when it is not the
// active one.
func latest(p api.PreAggInfo) string {
	l := p.Last
	if l == nil || (p.Active != nil && l.BuildUUID == p.Active.BuildUUID) {
		if p.LastError != "" {
			return "failed: " + p.LastError
		}
		return "-"
	}
	s := string(l.Status) + " (" + l.Trigger + ")"
	if l.Error != "" {
		s += ": " + l.Error
	}
	return s
}

func preaggStatusCmd() *cobra.Command {
	var pf preaggFlags
	var limit int
	cmd := &cobra.Command{
		Use:   "status [MODEL/NAME]",
		Short: "Show pre-aggregate builds, newest first, with their errors",
		Long: `Show the builds of one pre-aggregate (MODEL/NAME) or of every pre-aggregate
of the project, newest first: status (queued, building, active, superseded,
failed), what triggered it (definition, cron, key_sql, partition, missing,
manual), rows, bytes, when it was built, how fresh its data is, how long it
took, and the error of a failed build. For one pre-aggregate it first says
which build serves it and when cron refreshes it next.`,
		Example: `  millrace preagg status --project analytics
  millrace preagg status orders/orders_daily --project analytics --limit 5 --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := pf.check(); err != nil {
				return err
			}
			var model, name string
			if len(args) == 1 {
				var err error
				if model, name, err = splitPreAgg(args[0]); err != nil {
					return err
				}
			}
			c := pf.client()
			builds, err := c.PreAggBuilds(cmd.Context(), pf.project, model, name, limit)
			if err != nil {
				return err
			}
			var info *api.PreAggInfo
			if name != "" {
				list, err := c.PreAggregates(cmd.Context(), pf.project)
				if err != nil {
					return err
				}
				for i := range list {
					if list[i].Model == model && list[i].Name == name {
						info = &list[i]
					}
				}
				if info == nil {
					return fmt.Errorf("model %s declares no pre-aggregate %s in project %s (see millrace preagg list)", model, name, pf.project)
				}
			}
			if pf.json {
				out := map[string]any{"builds": builds}
				if info != nil {
					out["preAggregate"] = info
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			if info != nil {
				serving := "nothing (no active build: its queries miss with NO_ACTIVE_MATERIALIZATION)"
				if a := info.Active; a != nil {
					serving = fmt.Sprintf("build %s (%d rows, built %s, data as of %s)", a.BuildUUID, a.Rows, stamp(a.BuiltAt), stamp(a.DataAsOf))
					if info.ActiveOutdated {
						serving += ", made for an earlier definition: it no longer serves"
					}
				}
				fmt.Fprintf(w, "%s/%s serving: %s\n", model, name, serving)
				if info.NextRefreshAt != nil {
					fmt.Fprintf(w, "next refresh: %s\n", stamp(info.NextRefreshAt))
				}
				if info.LastError != "" {
					fmt.Fprintf(w, "last error: %s\n", info.LastError)
				}
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BUILD\tMODEL\tPRE-AGGREGATE\tSTATUS\tTRIGGER\tROWS\tBYTES\tCREATED\tBUILT AT\tDATA AS OF\tDURATION\tERROR")
			for _, b := range builds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", b.BuildUUID, b.Model, b.PreAggregate, b.Status, b.Trigger,
					b.Rows, humanBytes(b.Bytes), b.CreatedAt.UTC().Format(time.RFC3339), stamp(b.BuiltAt), stamp(b.DataAsOf), msDuration(b.DurationMs), oneLine(b.Error))
			}
			if len(builds) == 0 {
				fmt.Fprintln(tw, "(no builds yet)")
			}
			return tw.Flush()
		},
	}
	pf.bind(cmd)
	cmd.Flags().IntVar(&limit, "limit", 20, "Most builds to show")
	return cmd
}

func preaggRefreshCmd() *cobra.Command {
	var pf preaggFlags
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "refresh MODEL/NAME",
		Short: "Build a pre-aggregate now (trigger manual); --wait follows the build to its end",
		Long: `Start a build of the pre-aggregate NAME declared on MODEL. If a build of its
current definition is already queued or building, that one is returned
instead of a second. The active build keeps serving until the new one is
complete and promoted; a build that fails (or comes out empty) never
replaces it. With --wait it follows the build and exits non-zero unless it
became active.`,
		Example: `  millrace preagg refresh orders/orders_daily --project analytics
  millrace preagg refresh orders/orders_daily --project analytics --wait --timeout 10m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := pf.check(); err != nil {
				return err
			}
			model, name, err := splitPreAgg(args[0])
			if err != nil {
				return err
			}
			c := pf.client()
			st, err := c.PreAggRefresh(cmd.Context(), pf.project, model, name)
			if err != nil {
				return err
			}
			if !wait {
				if pf.json {
					return printJSON(cmd.OutOrStdout(), st)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "build %s of %s/%s %s; follow it with: millrace preagg status %s/%s --project %s\n",
					st.BuildUUID, model, name, cmp.Or(string(st.Status), "queued"), model, name, pf.project)
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "build %s of %s/%s %s\n", st.BuildUUID, model, name, cmp.Or(string(st.Status), "queued"))
			b, err := waitBuild(cmd.Context(), c, pf.project, st.BuildUUID, timeout, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if pf.json {
				if err := printJSON(cmd.OutOrStdout(), b); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "build %s %s: %d rows, %s, data as of %s, took %s\n", b.BuildUUID, b.Status, b.Rows,
					humanBytes(b.Bytes), stamp(b.DataAsOf), msDuration(b.DurationMs))
			}
			if b.Status != api.BuildActive {
				msg := fmt.Sprintf("build %s ended %s", b.BuildUUID, b.Status)
				if b.Error != "" {
					msg += ": " + b.Error
				}
				return exitError{code: 1, msg: msg + " (the previous active build, if any, keeps serving)", reported: pf.json}
			}
			return nil
		},
	}
	pf.bind(cmd)
	cmd.Flags().BoolVar(&wait, "wait", false, "Wait until the build is active (or failed) and print it")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "With --wait: give up after this long (the build goes on)")
	return cmd
}

// waitBuild polls a build until it is no longer queued or building.
func waitBuild(ctx context.Context, c *client.Client, project, uuid string, timeout time.Duration, progress io.Writer) (api.PreAggBuild, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := api.BuildStatus("")
	for {
		b, err := c.PreAggBuild(ctx, project, uuid)
		if err != nil {
			if ctx.Err() != nil {
				return b, fmt.Errorf("build %s still %s after %s (it goes on; see millrace preagg status)", uuid, last, timeout)
			}
			return b, err
		}
		if b.Status != last {
			fmt.Fprintf(progress, "build %s %s\n", uuid, b.Status)
			last = b.Status
		}
		if b.Status != api.BuildQueued && b.Status != api.BuildBuilding {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return b, fmt.Errorf("build %s still %s after %s (it goes on; see millrace preagg status)", uuid, b.Status, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// auditEntry is one audited query.
type auditEntry struct {
	Query        string                `json:"query"` // its name in the file, or its uuid
	QueryUUID    string                `json:"queryUuid,omitempty"`
	Explore      string                `json:"explore,omitempty"`
	Hit          bool                  `json:"hit"`
	PreAggregate *api.PreAggregateMeta `json:"preAggregate"`
}

type auditReport struct {
	Queries []auditEntry `json:"queries"`
	Hits    int          `json:"hits"`
	Misses  int          `json:"misses"`
}

func preaggAuditCmd() *cobra.Command {
	var pf preaggFlags
	var file string
	var history int
	var failOnMiss, wait bool
	cmd := &cobra.Command{
		Use:   "audit (--file QUERIES.json | --history N)",
		Short: "Report which metric queries a pre-aggregate serves, and why the others miss; --fail-on-miss gates CI",
		Long: `Check which metric queries are served from a pre-aggregate, and for each one
that is not, the most specific reason (FIELD_NOT_COVERED, GRAIN_NOT_DERIVABLE,
NON_ADDITIVE_NEEDS_EXACT_MATCH, FILTER_OUT_OF_SCOPE, NO_ACTIVE_MATERIALIZATION,
BUILD_TOO_STALE, CUSTOM_SQL_METRIC, ...) with the pre-aggregate that came
closest.

--file submits each query of a JSON file (background lane) and reports the
server's decision from its reply; with --wait it also waits for each query to
end and reports what finally served it (a lost materialization turns a hit
into a miss, MATERIALIZATION_MISSING). The queries run, or come from the
result cache. The file is a JSON array (or {"queries": [...]}) whose items
are metric queries as 'millrace query --file' takes them, each optionally
with a "name" to report it by.

--history N reads the N most recent queries of the project's history
instead, submitting nothing, and reports the metric queries among them.

--fail-on-miss exits 1 when any query missed, for CI (as Lightdash's audit
does). A query the server refuses (an unknown model or field, a bad filter)
stops the audit with the server's error, exit 1.`,
		Example: `  millrace preagg audit --project analytics --file dashboards/queries.json --fail-on-miss
  millrace preagg audit --project analytics --history 200 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(); err != nil {
				return err
			}
			if (file == "") == (history <= 0) {
				return fmt.Errorf("give one of --file QUERIES.json or --history N")
			}
			c := pf.client()
			var rep auditReport
			var err error
			if file != "" {
				rep, err = auditFile(cmd, c, pf.project, file, wait)
			} else {
				rep, err = auditHistory(cmd.Context(), c, pf.project, history)
			}
			if err != nil {
				return err
			}
			for _, e := range rep.Queries {
				if e.Hit {
					rep.Hits++
				} else {
					rep.Misses++
				}
			}
			if pf.json {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "QUERY\tEXPLORE\tRESULT\tPRE-AGGREGATE / REASON")
				for _, e := range rep.Queries {
					res, why := "MISS", missText(orMeta(e.PreAggregate))
					if e.Hit {
						res, why = "HIT", e.PreAggregate.Name
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Query, e.Explore, res, why)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d metric queries: %d served from a pre-aggregate, %d missed\n", len(rep.Queries), rep.Hits, rep.Misses)
			}
			if failOnMiss && rep.Misses > 0 {
				return exitError{code: 1, msg: fmt.Sprintf("%d of %d metric queries missed the pre-aggregates (--fail-on-miss)", rep.Misses, len(rep.Queries)), reported: pf.json}
			}
			return nil
		},
	}
	pf.bind(cmd)
	cmd.Flags().StringVar(&file, "file", "", "JSON file of metric queries to submit and check (- reads standard input)")
	cmd.Flags().IntVar(&history, "history", 0, "Check the N most recent queries of the history instead (submits nothing)")
	cmd.Flags().BoolVar(&failOnMiss, "fail-on-miss", false, "Exit 1 if any query missed")
	cmd.Flags().BoolVar(&wait, "wait", false, "With --file: wait for each query to end and report what finally served it")
	return cmd
}

func orMeta(m *api.PreAggregateMeta) *api.PreAggregateMeta {
	if m == nil {
		return &api.PreAggregateMeta{Reason: &api.MissReason{Code: "UNKNOWN", Message: "the server reported no pre-aggregate decision"}}
	}
	return m
}

// auditFile submits each query of file and collects the decisions.
func auditFile(cmd *cobra.Command, c *client.Client, project, file string, wait bool) (auditReport, error) {
	data, err := readInput(cmd, file)
	if err != nil {
		return auditReport{}, err
	}
	var items []json.RawMessage
	if t := strings.TrimSpace(string(data)); strings.HasPrefix(t, "{") {
		var doc struct {
			Queries []json.RawMessage `json:"queries"`
		}
		if err := strictJSON(data, &doc); err != nil {
			return auditReport{}, fmt.Errorf("%s: want a JSON array of metric queries or {\"queries\": [...]}: %w", file, err)
		}
		items = doc.Queries
	} else if err := json.Unmarshal(data, &items); err != nil {
		return auditReport{}, fmt.Errorf("%s: want a JSON array of metric queries or {\"queries\": [...]}: %w", file, err)
	}
	if len(items) == 0 {
		return auditReport{}, fmt.Errorf("%s has no queries", file)
	}
	rep := auditReport{Queries: []auditEntry{}}
	for i, raw := range items {
		label := fmt.Sprintf("#%d", i+1)
		var named struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &named)
		if named.Name != "" {
			label = named.Name
			raw = withoutKey(raw, "name")
		}
		in, err := parseMetricSubmit(raw)
		if err != nil {
			return rep, fmt.Errorf("%s: query %s: %w", file, label, err)
		}
		if in.Context == "" {
			in.Context = "background"
		}
		sub, err := c.MetricQuerySubmit(cmd.Context(), project, in)
		if err != nil {
			return rep, fmt.Errorf("query %s: %w", label, err)
		}
		meta := sub.CacheMetadata.PreAggregate
		if wait {
			page, err := waitQuery(cmd.Context(), c, project, sub.QueryUUID, 1, nil)
			if err != nil {
				return rep, fmt.Errorf("query %s: %w", label, err)
			}
			if page.CacheMetadata != nil && page.CacheMetadata.PreAggregate != nil {
				meta = page.CacheMetadata.PreAggregate
			}
		}
		rep.Queries = append(rep.Queries, auditEntry{Query: label, QueryUUID: sub.QueryUUID, Explore: in.Query.ExploreName,
			Hit: meta != nil && meta.Hit, PreAggregate: meta})
	}
	return rep, nil
}

// withoutKey drops key from a JSON object (the audit file's "name", which
// a metric query does not have).
func withoutKey(raw json.RawMessage, key string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	delete(m, key)
	b, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return b
}

// auditHistory reads the n most recent queries and keeps the metric ones.
func auditHistory(ctx context.Context, c *client.Client, project string, n int) (auditReport, error) {
	rep := auditReport{Queries: []auditEntry{}}
	const pageSize = 500
	for page, seen := 1, 0; seen < n; page++ {
		h, err := c.QueryHistory(ctx, project, page, min(pageSize, n))
		if err != nil {
			return rep, err
		}
		for _, q := range h.Queries {
			if seen == n {
				break
			}
			seen++
			if q.CacheMetadata == nil || q.CacheMetadata.PreAggregate == nil {
				continue // a SQL query: pre-aggregates never apply
			}
			e := auditEntry{Query: q.QueryUUID, QueryUUID: q.QueryUUID, Hit: q.CacheMetadata.PreAggregate.Hit, PreAggregate: q.CacheMetadata.PreAggregate}
			if q.MetricQuery != nil {
				e.Explore = q.MetricQuery.ExploreName
			}
			rep.Queries = append(rep.Queries, e)
		}
		if len(h.Queries) < min(pageSize, n) {
			break // the history has no more
		}
	}
	return rep, nil
}

// splitPreAgg reads MODEL/NAME.
func splitPreAgg(s string) (string, string, error) {
	model, name, ok := strings.Cut(s, "/")
	if !ok || model == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("name a pre-aggregate as MODEL/NAME (e.g. orders/orders_daily), got %q", s)
	}
	return model, name, nil
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func msDuration(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}
