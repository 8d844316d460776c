package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the result for people.
func (r *Result) WriteTable(w io.Writer) error {
	arrival := "as fast as possible"
	if r.Rate > 0 {
		arrival = fmt.Sprintf("at %g/s", r.Rate)
	}
	target := r.Target
	if r.Servers > 1 {
		target = fmt.Sprintf("%s, %d servers", target, r.Servers)
	}
	if r.Workers > 0 {
		target = fmt.Sprintf("%s, %d workers x %d", target, r.Workers, r.WorkerConcurrency)
	}
	if r.Schema != "" {
		target += ", schema " + r.Schema
	}
	fmt.Fprintf(w, "millrace bench flows: %d executions of %d step(s), %d submitters %s (%s)\n\n",
		r.Executions, r.Steps, r.Concurrency, arrival, target)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-24s\tp50\tp90\tp99\tmax\tsamples\t\n", "latency (ms)")
	for _, l := range []struct {
		name string
		l    Latency
	}{{"submit -> command start", r.SubmitToStart}, {"submit -> complete", r.SubmitToComplete}} {
		fmt.Fprintf(tw, "%-24s\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n", l.name, l.l.P50, l.l.P90, l.l.P99, l.l.Max, l.l.Samples)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	redeliveries := "unknown (NATS not reachable; set --nats-url)"
	if r.Redeliveries != nil {
		redeliveries = fmt.Sprint(*r.Redeliveries)
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "throughput\t%.1f executions/s (%.1f steps/s), first submit to last completion in %.2fs\n",
		r.ExecutionsPerSecond, r.StepsPerSecond, r.Seconds)
	if r.Drain {
		fmt.Fprintf(tw, "drain\t%.1f executions/s, from the workers' start (all submitted) to the last completion in %.2fs\n",
			r.DrainPerSecond, r.DrainSeconds)
	}
	fmt.Fprintf(tw, "submitted\t%d (%.1f/s)\n", r.Submitted, r.SubmitRate)
	if len(r.Answers) > 0 {
		fmt.Fprintf(tw, "answers\t%s\n", answersLine(r.Answers))
	}
	if r.Prefilled > 0 {
		fmt.Fprintf(tw, "prefilled\t%d finished executions stored before the run (in %.1fs)\n", r.Prefilled, r.PrefillSeconds)
	}
	fmt.Fprintf(tw, "completed\t%d\n", r.Completed)
	fmt.Fprintf(tw, "not completed\t%d (failed or cancelled: %d)\n", r.Incomplete, r.Failed)
	fmt.Fprintf(tw, "redeliveries\t%s\n", redeliveries)
	if r.CPUMillisPerExecution > 0 {
		who := "server, workers, NATS and load generator; not the database"
		if r.Workers == 0 {
			who = "the load generator alone"
		}
		fmt.Fprintf(tw, "cpu/execution\t%.3f ms in this process (%s)\n", r.CPUMillisPerExecution, who)
	}
	if r.Statements != nil {
		fmt.Fprintf(tw, "statements\t%.1f per execution (pg_stat_statements, %d calls from first submit to last completion); the most frequent, per execution:\n", r.Statements.PerExecution, r.Statements.Total)
		for _, s := range r.Statements.Top {
			fmt.Fprintf(tw, "\t%8.2f  %s\n", s.PerExecution, s.Query)
		}
	}
	if r.Storage != nil {
		fmt.Fprintf(tw, "storage\t%.0f bytes per execution (%d bytes of event store tables, %d executions stored; %s)\n",
			r.Storage.BytesPerExecution, r.Storage.Bytes, r.Storage.Executions, r.Storage.Method)
	}
	if r.TimedOut {
		fmt.Fprintf(tw, "timed out\tyes\n")
	}
	return tw.Flush()
}

// answersLine lists the submit answers by status, in status order: "200:
// 19850, 429: 412 (retried)".
func answersLine(a map[string]int64) string {
	keys := slices.Sorted(maps.Keys(a))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		p := fmt.Sprintf("%s: %d", k, a[k])
		if k == "429" {
			p += " (shed, retried)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}
