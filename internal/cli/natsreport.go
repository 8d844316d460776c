package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
)

// reportFlags are the settings of `nats stream report` and `nats consumer
// report`: the connection and the name of every stream Millrace uses.
type reportFlags struct {
	n      config.NATS
	q      config.Query
	p      config.PreAgg
	asJSON bool
}

func (f *reportFlags) bind(cmd *cobra.Command) {
	s := &config.Set{}
	config.BindNATSStreams(s, &f.n, &f.q, &f.p)
	bindSet(cmd, s)
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "Print the report as JSON (one object per stream, with its consumers)")
}

// streams is the named streams, or else every Millrace stream: commands,
// warehouse queries, pre-aggregates.
func (f *reportFlags) streams(args []string) []string {
	if len(args) > 0 {
		return args
	}
	return []string{f.n.Stream, f.q.Stream, f.p.Stream}
}

func (f *reportFlags) report(cmd *cobra.Command, args []string) ([]bus.StreamReport, error) {
	conn, err := natsConnect(cmd, f.n)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.Report(cmd.Context(), f.streams(args))
}

func natsStreamReportCmd() *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "report [STREAM...]",
		Short: "Every Millrace stream as `nats stream report` shows it: storage, consumers, messages, bytes, lost, deleted, replicas",
		Long: `Report on the command stream (NATS_STREAM), the warehouse query stream
(MILLRACE_QUERY_STREAM) and the pre-aggregate stream (PRE_AGGREGATE_STREAM),
or on the streams named. A stream that does not exist yet is shown as
missing. Replicas names the peers of a clustered stream, the leader marked *
and a replica that is offline or behind marked !; a stream whose replica
count is not NATS_REPLICAS is pointed out with the remedy.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := f.report(cmd, args)
			if err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), rs)
			}
			return writeStreamReport(cmd.OutOrStdout(), rs, max(f.n.Replicas, bus.DefaultReplicas))
		},
	}
	f.bind(cmd)
	return cmd
}

func natsConsumerReportCmd() *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "report [STREAM]",
		Short: "Every consumer of the Millrace streams as `nats consumer report` shows it: ack pending, redelivered, unprocessed, ack floor",
		Long: `Report on every consumer (worker pool or lane) of STREAM, or of every
Millrace stream: the command stream, the warehouse query stream and the
pre-aggregate stream. Unprocessed is what no worker has been given yet, also
as a share of the stream's messages; unprocessed plus ack pending is the lag
KEDA's nats-jetstream scaler reads. Cluster names the consumer's peers, the
leader marked *.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := f.report(cmd, args)
			if err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), rs)
			}
			return writeConsumerReport(cmd.OutOrStdout(), rs)
		},
	}
	f.bind(cmd)
	return cmd
}

// writeStreamReport prints nats stream report's table, then what needs
// attention: streams that are missing or unreadable, and replica counts
// that differ from NATS_REPLICAS.
func writeStreamReport(w io.Writer, rs []bus.StreamReport, replicas int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Stream\tStorage\tConsumers\tMessages\tBytes\tLost\tDeleted\tReplicas")
	var notes []string
	for _, r := range rs {
		if r.Error != "" {
			state := "error"
			if r.Missing {
				state = "missing"
			}
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\n", r.Name, state)
			notes = append(notes, fmt.Sprintf("%s: %s", r.Name, r.Error))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\n", r.Name, r.Storage, len(r.Consumers), r.Messages,
			humanBytes(int64(r.Bytes)), lost(r), r.Deleted, streamReplicas(r))
		if r.Replicas != replicas {
			notes = append(notes, fmt.Sprintf("%s has replicas=%d but NATS_REPLICAS=%d; Millrace uses it as it is: scale it with `nats stream edit %s --replicas %d`, or delete it with `millrace nats stream rm %s` and restart so it is recreated, or set NATS_REPLICAS=%d",
				r.Name, r.Replicas, replicas, r.Name, replicas, r.Name, r.Replicas))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeNotes(w, notes)
}

// streamReplicas is the peers of a clustered stream, or on a single server
// just the count.
func streamReplicas(r bus.StreamReport) string {
	if r.Cluster.Clustered() {
		return r.Cluster.String()
	}
	return strconv.Itoa(r.Replicas)
}

// lost is "messages (bytes)" as nats stream report shows it, or 0.
func lost(r bus.StreamReport) string {
	if r.Lost == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", r.Lost, humanBytes(int64(r.LostBytes)))
}

// writeConsumerReport prints nats consumer report's table for each stream.
func writeConsumerReport(w io.Writer, rs []bus.StreamReport) error {
	for i, r := range rs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if r.Error != "" {
			fmt.Fprintf(w, "Consumer report for %s: %s\n", r.Name, r.Error)
			continue
		}
		fmt.Fprintf(w, "Consumer report for %s with %d consumers\n\n", r.Name, len(r.Consumers))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "Consumer\tMode\tAck Policy\tAck Wait\tAck Pending\tRedelivered\tUnprocessed\tAck Floor\tCluster")
		for _, c := range r.Consumers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d / %.0f%%\t%d\t%s\n", c.Name, c.Mode, strings.TrimPrefix(c.AckPolicy, "Ack"),
				c.AckWait, c.AckPending, c.Redelivered, c.Unprocessed, c.UnprocessedPct, c.AckFloor, c.Cluster.String())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func writeNotes(w io.Writer, notes []string) error {
	if len(notes) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	for _, n := range notes {
		if _, err := fmt.Fprintln(w, n); err != nil {
			return err
		}
	}
	return nil
}
