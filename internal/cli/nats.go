package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
)

// natsCmd is built-in inspection, since the NATS CLI is often not at hand.
func natsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "nats", Short: "Inspect and repair the JetStream streams and consumers Millrace uses"}
	stream := &cobra.Command{Use: "stream", Short: "Report on, inspect or delete Millrace's streams"}
	stream.AddCommand(natsInfoCmd("info [NAME]"), natsStreamReportCmd(), natsStreamRmCmd())
	consumer := &cobra.Command{Use: "consumer", Short: "Report on, inspect or delete the worker pools' consumers"}
	consumer.AddCommand(natsInfoCmd("info [STREAM [NAME]]"), natsConsumerReportCmd(), natsConsumerRmCmd())
	cmd.AddCommand(stream, consumer)
	return cmd
}

// natsConnect connects to --nats-url, else $NATS_URL, else the running
// `millrace dev` (see devfile.go), else the default URL.
func natsConnect(cmd *cobra.Command, n config.NATS) (*bus.Conn, error) {
	from := "--nats-url"
	switch {
	case cmd.Flags().Changed("nats-url"):
	case os.Getenv("NATS_URL") != "":
		from = "NATS_URL"
	default:
		from = "the default"
		if d, ok := findDev(); ok && d.NATSURL != "" {
			n.URL, from = d.NATSURL, "the running millrace dev ("+filepath.Join(devDataDir(), devFileName)+")"
		}
	}
	log, _ := newLogger(config.Log{Level: "warn"}, cmd.ErrOrStderr())
	conn, err := bus.Connect(cmd.Context(), n.Bus("millrace-cli"), log)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (from %s): %w; start `millrace dev` (its URL is found by itself when run from the same directory), or point at your NATS with --nats-url or NATS_URL", bus.Redact(n.URL), from, err)
	}
	return conn, nil
}

func natsInfoCmd(use string) *cobra.Command {
	var n config.NATS
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use,
		Short: "Show the stream and consumer: configuration, depth, pending and redeliveries",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				n.Stream = args[0]
			}
			if len(args) > 1 {
				n.Consumer = args[1]
			}
			conn, err := natsConnect(cmd, n)
			if err != nil {
				return err
			}
			defer conn.Close()
			out := cmd.OutOrStdout()
			st, err := conn.JS.Stream(cmd.Context(), n.Stream)
			if err != nil {
				return fmt.Errorf("stream %s on %s: %w (`millrace server` and `millrace dev` create it at start)", n.Stream, bus.Redact(n.URL), err)
			}
			si, err := st.Info(cmd.Context())
			if err != nil {
				return err
			}
			type consumerView struct {
				Name           string `json:"name"`
				DeliverPolicy  string `json:"deliver_policy"`
				AckPolicy      string `json:"ack_policy"`
				AckWait        string `json:"ack_wait"`
				MaxDeliver     int    `json:"max_deliver"`
				MaxAckPending  int    `json:"max_ack_pending"`
				NumPending     uint64 `json:"num_pending"`
				NumAckPending  int    `json:"num_ack_pending"`
				NumRedelivered int    `json:"num_redelivered"`
				NumWaiting     int    `json:"num_waiting"`
			}
			var cv *consumerView
			if c, err := st.Consumer(cmd.Context(), n.Consumer); err == nil {
				if ci, err := c.Info(cmd.Context()); err == nil {
					cv = &consumerView{ci.Name, ci.Config.DeliverPolicy.String(), ci.Config.AckPolicy.String(), ci.Config.AckWait.String(),
						ci.Config.MaxDeliver, ci.Config.MaxAckPending, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting}
				}
			}
			if asJSON {
				return printJSON(out, map[string]any{
					"stream": map[string]any{"name": si.Config.Name, "subjects": si.Config.Subjects, "retention": si.Config.Retention.String(),
						"storage": si.Config.Storage.String(), "replicas": si.Config.Replicas, "max_age": si.Config.MaxAge.String(), "messages": si.State.Msgs,
						"bytes": si.State.Bytes, "first_seq": si.State.FirstSeq, "last_seq": si.State.LastSeq, "consumers": si.State.Consumers},
					"consumer": cv,
				})
			}
			fmt.Fprintf(out, "stream %s\n  subjects   %v\n  retention  %s   storage %s   replicas %d   max_age %s\n  messages   %d (%d bytes), seq %d..%d, %d consumers\n",
				si.Config.Name, si.Config.Subjects, si.Config.Retention, si.Config.Storage, si.Config.Replicas, si.Config.MaxAge.Round(time.Second),
				si.State.Msgs, si.State.Bytes, si.State.FirstSeq, si.State.LastSeq, si.State.Consumers)
			if cv == nil {
				fmt.Fprintf(out, "consumer %s: missing (workers and the server create it at start)\n", n.Consumer)
				return nil
			}
			fmt.Fprintf(out, "consumer %s\n  deliver %s   ack %s   ack_wait %s   max_deliver %d   max_ack_pending %d\n  pending %d   ack_pending %d   redelivered %d   waiting pulls %d\n",
				cv.Name, cv.DeliverPolicy, cv.AckPolicy, cv.AckWait, cv.MaxDeliver, cv.MaxAckPending, cv.NumPending, cv.NumAckPending, cv.NumRedelivered, cv.NumWaiting)
			if cv.NumPending > 0 && cv.NumWaiting == 0 {
				fmt.Fprintln(out, "warning: notifications are waiting and no worker is pulling; start `millrace worker`")
			}
			return nil
		},
	}
	s := &config.Set{}
	config.BindNATS(s, &n)
	bindSet(cmd, s)
	cmd.Flags().BoolVar(&asJSON, "json", false, "Print machine-readable JSON")
	return cmd
}

func natsConsumerRmCmd() *cobra.Command {
	var n config.NATS
	cmd := &cobra.Command{
		Use:   "rm STREAM NAME",
		Short: "Delete a consumer (workers and the server recreate it at start)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := natsConnect(cmd, n)
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := conn.JS.DeleteConsumer(cmd.Context(), args[0], args[1]); err != nil {
				return fmt.Errorf("delete consumer %s on %s: %w", args[1], args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted consumer %s; restart the workers to recreate it\n", args[1])
			return nil
		},
	}
	s := &config.Set{}
	config.BindNATS(s, &n)
	bindSet(cmd, s)
	return cmd
}

func natsStreamRmCmd() *cobra.Command {
	var n config.NATS
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a stream (the remedy for a stream with workqueue retention or wrong subjects)",
		Long: `Delete a JetStream stream. Millrace keeps all work in its database, so deleting
the stream loses nothing: restart the server and it recreates the stream with
the right configuration and re-notifies every pending command.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := natsConnect(cmd, n)
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := conn.JS.DeleteStream(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("delete stream %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted stream %s; restart millrace server to recreate it\n", args[0])
			return nil
		},
	}
	s := &config.Set{}
	config.BindNATS(s, &n)
	bindSet(cmd, s)
	return cmd
}
