package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/semantic"
)

func queryCmd() *cobra.Command {
	var cf clientFlags
	var project, format string
	var background, wait, invalidate bool
	var pageSize int
	var mf metricFlags
	cmd := &cobra.Command{
		Use:   "query [SQL]",
		Short: "Run SQL, or a metric query (--metric), against a project (asynchronously) and print the rows",
		Long: `Submit SQL to a project's warehouse. Without --wait it prints the query's
id and returns; with --wait it polls until the query ends and prints every
row (all pages) as a table, JSON or CSV. --background uses the background
lane, which never delays interactive queries.

With --metric it submits a metric query over one of the project's models
instead (POST /api/v2/projects/{project}/query/metric-query): name the model
with --explore and its fields by id (<model>_<name>, a time dimension at a
grain as <model>_<name>_<grain>, or the bare names), or give the whole
request with --file (JSON: {"query": {...}, "context": ...} or just the
query). --explore or --file implies --metric. A filter is "FIELD OP VALUE":
OP is one of equals (=), notEquals (!=), greaterThan (>),
greaterThanOrEqual (>=), lessThan (<), lessThanOrEqual (<=), inBetween,
startsWith, endsWith, include, isNull, notNull; several values are
separated by commas (equals a,b means a or b; inBetween from,to). A filter
on one of --metrics filters the aggregated value (HAVING). Values with a
comma or a nested or-group need --file.

A metric query also prints one line saying whether a pre-aggregate served
it, and if not, why not (the miss reason): on standard output after a
table, on standard error with --format json or csv. With --json and --wait
the output is one object {queryUuid, status, cacheMetadata, columns, rows}.`,
		Example: `  millrace query "select 1 as one" --project analytics --wait
  millrace query "select * from orders" --project analytics --wait --format csv > orders.csv
  millrace query --project analytics --explore orders --dimensions orders_created_at_month,orders_status \
      --metrics orders_revenue --filter 'orders_status != cancelled' --sort orders_created_at_month --wait
  millrace query --project analytics --file dashboard-chart.json --wait --json
  millrace query --project analytics --explore orders --metrics orders_count --no-pre-aggregates --wait`,
		Args: func(cmd *cobra.Command, args []string) error {
			if mf.on() {
				if len(args) > 0 {
					return fmt.Errorf("a metric query takes no SQL argument (got %q); use --explore and the field flags, or --file", args[0])
				}
				return nil
			}
			if len(args) != 1 {
				return fmt.Errorf("give the SQL to run as one argument, or a metric query with --metric (see --help)")
			}
			return nil
		},
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
			var sub api.Submitted
			var err error
			metric := mf.on()
			if metric {
				var in api.MetricQuerySubmit
				if in, err = mf.request(cmd); err != nil {
					return err
				}
				if background || in.Context == "" {
					in.Context = lane
				}
				in.InvalidateCache = in.InvalidateCache || invalidate
				sub, err = c.MetricQuerySubmit(cmd.Context(), project, in)
			} else {
				sub, err = c.QuerySubmit(cmd.Context(), project, args[0], lane, invalidate)
			}
			if err != nil {
				return err
			}
			if !wait {
				if cf.json {
					return printJSON(cmd.OutOrStdout(), sub)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "query %s submitted (cache hit: %v); poll with --wait or GET /api/v2/projects/%s/query/%s\n",
					sub.QueryUUID, sub.CacheMetadata.CacheHit, project, sub.QueryUUID)
				if metric {
					fmt.Fprintln(cmd.OutOrStdout(), preAggLine(sub.CacheMetadata.PreAggregate))
				}
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "query %s submitted (cache hit: %v)\n", sub.QueryUUID, sub.CacheMetadata.CacheHit)
			first, err := waitQuery(cmd.Context(), c, project, sub.QueryUUID, pageSize, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			// The poll has the last word: a lost materialization sends a
			// hit to the warehouse after the submit's reply.
			meta := sub.CacheMetadata
			if first.CacheMetadata != nil {
				meta = *first.CacheMetadata
			}
			if first.Status != api.QueryReady {
				msg := fmt.Sprintf("query %s %s", sub.QueryUUID, first.Status)
				if first.Error != "" {
					msg += ": " + first.Error
				}
				if metric {
					msg += "\n" + preAggLine(meta.PreAggregate)
				}
				return exitError{code: 1, msg: msg}
			}
			rows, err := allRows(cmd.Context(), c, project, sub.QueryUUID, first, pageSize)
			if err != nil {
				return err
			}
			if metric && cf.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"queryUuid": sub.QueryUUID, "status": first.Status,
					"cacheMetadata": meta, "columns": first.Columns, "rows": rows})
			}
			if err := printRows(cmd.OutOrStdout(), format, first.Columns, rows); err != nil {
				return err
			}
			if metric {
				w := cmd.OutOrStdout()
				if format != "table" {
					w = cmd.ErrOrStderr()
				}
				fmt.Fprintln(w, preAggLine(meta.PreAggregate))
			}
			return nil
		},
	}
	cf.bind(cmd)
	mf.bind(cmd)
	cmd.Flags().StringVar(&project, "project", "", "Project whose warehouse runs the query")
	cmd.Flags().StringVar(&format, "format", "table", "Output format with --wait: table, json or csv")
	cmd.Flags().BoolVar(&background, "background", false, "Use the background lane")
	cmd.Flags().BoolVar(&wait, "wait", false, "Wait for the result and print it")
	cmd.Flags().BoolVar(&invalidate, "invalidate-cache", false, "Run it even if a cached result is fresh")
	cmd.Flags().IntVar(&pageSize, "page-size", 5000, "Rows fetched per request while printing")
	return cmd
}

// waitQuery polls a query until it ends and returns its first page,
// writing a progress line to progress on each status change and every 5s.
func waitQuery(ctx context.Context, c *client.Client, project, uuid string, pageSize int, progress io.Writer) (api.QueryPage, error) {
	start, lastStatus, lastLine := time.Now(), api.QueryStatus(""), time.Now()
	for {
		first, err := c.QueryGet(ctx, project, uuid, 1, pageSize)
		if err != nil {
			return first, err
		}
		elapsed := time.Since(start).Round(100 * time.Millisecond)
		done := first.Status != api.QueryPending && first.Status != api.QueryQueued && first.Status != api.QueryExecuting
		// A line per status change, and one every 5s while it stays, so
		// a slow warehouse never looks like a hang.
		if progress != nil && (first.Status != lastStatus || time.Since(lastLine) >= 5*time.Second) {
			fmt.Fprintf(progress, "query %s %s after %s\n", uuid, first.Status, elapsed)
			lastStatus, lastLine = first.Status, time.Now()
		}
		if done {
			return first, nil
		}
		select {
		case <-ctx.Done():
			return first, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// allRows reads every page after first.
func allRows(ctx context.Context, c *client.Client, project, uuid string, first api.QueryPage, pageSize int) ([]map[string]any, error) {
	rows := first.Rows
	for p := first.NextPage; p != nil; {
		next, err := c.QueryGet(ctx, project, uuid, *p, pageSize)
		if err != nil {
			return nil, err
		}
		rows = append(rows, next.Rows...)
		p = next.NextPage
	}
	return rows, nil
}

// metricFlags build a metric query from flags or a file.
type metricFlags struct {
	metric, noPreAgg           bool
	file, explore              string
	dimensions, metrics, sorts []string
	filters                    []string
	limit                      int
}

func (m *metricFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&m.metric, "metric", false, "Submit a metric query (Lightdash's shape) over a model instead of SQL")
	f.StringVar(&m.file, "file", "", "Metric query file (JSON): {\"query\": {...}, \"context\", \"invalidateCache\", \"usePreAggregates\"} or just the query; - reads standard input")
	f.StringVar(&m.explore, "explore", "", "Model (explore) to query")
	f.StringSliceVar(&m.dimensions, "dimensions", nil, "Dimension field ids, comma-separated (a time dimension at a grain: <model>_<name>_<grain>)")
	f.StringSliceVar(&m.metrics, "metrics", nil, "Metric field ids, comma-separated")
	f.StringArrayVar(&m.filters, "filter", nil, "Filter 'FIELD OP VALUE[,VALUE...]' (repeatable; all must hold)")
	f.StringSliceVar(&m.sorts, "sort", nil, "Sort by FIELD or FIELD:desc (repeatable, first wins)")
	f.IntVar(&m.limit, "limit", 0, "Row limit (server default 500, at most 5000)")
	f.BoolVar(&m.noPreAgg, "no-pre-aggregates", false, "Send it to the warehouse even if a pre-aggregate matches (miss reason BYPASSED), e.g. to compare answers")
}

// on says whether the command line asks for a metric query.
func (m *metricFlags) on() bool { return m.metric || m.file != "" || m.explore != "" }

// request builds the submission from --file, then the flags (which
// override what the file says).
func (m *metricFlags) request(cmd *cobra.Command) (api.MetricQuerySubmit, error) {
	var in api.MetricQuerySubmit
	if m.file != "" {
		data, err := readInput(cmd, m.file)
		if err != nil {
			return in, err
		}
		if in, err = parseMetricSubmit(data); err != nil {
			return in, fmt.Errorf("--file %s: %w", m.file, err)
		}
	}
	q := &in.Query
	if m.explore != "" {
		q.ExploreName = m.explore
	}
	if len(m.dimensions) > 0 {
		q.Dimensions = m.dimensions
	}
	if len(m.metrics) > 0 {
		q.Metrics = m.metrics
	}
	if m.limit > 0 {
		q.Limit = m.limit
	}
	if len(m.sorts) > 0 {
		q.Sorts = nil
		for _, s := range m.sorts {
			field, dir, _ := strings.Cut(s, ":")
			switch strings.ToLower(dir) {
			case "", "asc":
				q.Sorts = append(q.Sorts, semantic.Sort{FieldID: field})
			case "desc":
				q.Sorts = append(q.Sorts, semantic.Sort{FieldID: field, Descending: true})
			default:
				return in, fmt.Errorf("--sort %q: the direction after ':' must be asc or desc", s)
			}
		}
	}
	for _, f := range m.filters {
		rule, err := parseFilter(f)
		if err != nil {
			return in, fmt.Errorf("--filter %q: %w", f, err)
		}
		group := &q.Filters.Dimensions
		if slices.Contains(q.Metrics, rule.Target.FieldID) {
			group = &q.Filters.Metrics
		}
		if *group == nil {
			*group = &semantic.FilterGroup{}
		}
		if len((*group).Or) > 0 {
			return in, fmt.Errorf("--filter %q: the file's filters are an or-group; add this filter in the file", f)
		}
		(*group).And = append((*group).And, semantic.FilterItem{FilterRule: rule})
	}
	if m.noPreAgg {
		no := false
		in.UsePreAggregates = &no
	}
	if q.ExploreName == "" {
		return in, fmt.Errorf("a metric query needs --explore MODEL (or a --file whose query has exploreName)")
	}
	if len(q.Dimensions) == 0 && len(q.Metrics) == 0 {
		return in, fmt.Errorf("a metric query needs --dimensions or --metrics")
	}
	return in, nil
}

// readInput reads a file, or standard input for "-".
func readInput(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(name)
}

// parseMetricSubmit reads {"query": {...}, ...} or a bare query.
func parseMetricSubmit(data []byte) (api.MetricQuerySubmit, error) {
	var in api.MetricQuerySubmit
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return in, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, ok := probe["query"]; ok {
		err := strictJSON(data, &in)
		return in, err
	}
	err := strictJSON(data, &in.Query)
	return in, err
}

func strictJSON(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("more than one JSON value")
	}
	return nil
}

// filterOps maps the short forms a shell user types to Lightdash's
// operators; the operator names themselves are accepted as they are.
var filterOps = map[string]semantic.FilterOperator{
	"=": semantic.OpEquals, "==": semantic.OpEquals, "!=": semantic.OpNotEquals, "<>": semantic.OpNotEquals,
	">": semantic.OpGreaterThan, ">=": semantic.OpGreaterThanOrEqual, "<": semantic.OpLessThan, "<=": semantic.OpLessThanOrEqual,
}

var filterOpNames = []semantic.FilterOperator{semantic.OpEquals, semantic.OpNotEquals, semantic.OpIsNull, semantic.OpNotNull,
	semantic.OpGreaterThan, semantic.OpGreaterThanOrEqual, semantic.OpLessThan, semantic.OpLessThanOrEqual,
	semantic.OpInBetween, semantic.OpStartsWith, semantic.OpEndsWith, semantic.OpInclude}

// parseFilter reads "FIELD OP VALUE[,VALUE...]". Values stay strings: the
// server types them by the field.
func parseFilter(s string) (semantic.FilterRule, error) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return semantic.FilterRule{}, fmt.Errorf("want 'FIELD OP VALUE', e.g. 'orders_status equals shipped'")
	}
	op, ok := filterOps[f[1]]
	if !ok {
		for _, o := range filterOpNames {
			if strings.EqualFold(f[1], string(o)) {
				op, ok = o, true
			}
		}
	}
	if !ok {
		names := make([]string, len(filterOpNames))
		for i, o := range filterOpNames {
			names[i] = string(o)
		}
		return semantic.FilterRule{}, fmt.Errorf("unknown operator %q (use one of %s, or = != > >= < <=)", f[1], strings.Join(names, ", "))
	}
	rule := semantic.FilterRule{Target: semantic.FilterTarget{FieldID: f[0]}, Operator: op}
	rest := strings.TrimSpace(strings.Join(f[2:], " "))
	switch {
	case op == semantic.OpIsNull || op == semantic.OpNotNull:
		if rest != "" {
			return rule, fmt.Errorf("%s takes no value", op)
		}
	case rest == "":
		return rule, fmt.Errorf("%s needs a value", op)
	default:
		for _, v := range strings.Split(rest, ",") {
			rule.Values = append(rule.Values, strings.TrimSpace(v))
		}
	}
	return rule, nil
}

// preAggLine says in one line whether a pre-aggregate served a metric
// query, and if not, why not.
func preAggLine(m *api.PreAggregateMeta) string {
	if m == nil {
		return "pre-aggregate: not reported by the server"
	}
	if m.Hit {
		s := "pre-aggregate: hit " + m.Name
		var parts []string
		if m.BuildUUID != "" {
			parts = append(parts, "build "+m.BuildUUID)
		}
		if m.BuiltAt != nil {
			parts = append(parts, "built "+m.BuiltAt.UTC().Format(time.RFC3339))
		}
		if m.DataAsOf != nil {
			parts = append(parts, "data as of "+m.DataAsOf.UTC().Format(time.RFC3339))
		}
		if len(parts) > 0 {
			s += " (" + strings.Join(parts, ", ") + ")"
		}
		return s
	}
	return "pre-aggregate: miss " + missText(m)
}

// missText is a miss reason in a few words: CODE: message (pre-aggregate,
// field).
func missText(m *api.PreAggregateMeta) string {
	r := m.Reason
	if r == nil {
		return "(no reason given)"
	}
	s := r.Code
	if r.Message != "" {
		s += ": " + r.Message
	}
	var parts []string
	if name := cmp.Or(r.PreAggregate, m.Name); name != "" {
		parts = append(parts, "closest "+name)
	}
	if r.FieldID != "" {
		parts = append(parts, "field "+r.FieldID)
	}
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
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

// tokenStatus says who the client's token speaks for, for doctor.
func tokenStatus(ctx context.Context, c *client.Client) string {
	who, err := c.WhoAmI(ctx)
	switch {
	case client.StatusOf(err) == http.StatusUnauthorized && c.Token == "":
		return "none: set " + tokenEnv + " or --token (an admin makes one with: millrace token create --role operator)"
	case client.StatusOf(err) == http.StatusUnauthorized:
		return "not accepted (unknown, expired or revoked): set " + tokenEnv + " or --token to a live token"
	case err != nil:
		return "cannot tell: " + err.Error()
	case who.AuthDisabled:
		return "not needed: the server runs with MILLRACE_AUTH=none (anyone who reaches it may do anything)"
	}
	name := ""
	if who.User.DisplayName != "" {
		name = fmt.Sprintf(" %q", who.User.DisplayName)
	}
	return fmt.Sprintf("role %s (%s %d%s)", who.Role, who.Kind, who.TokenID, name)
}
