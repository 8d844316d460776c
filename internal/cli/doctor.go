package cli

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
)

// cliSkewLimit is how far this machine's clock may be from the server's
// before doctor warns; the Date header it is read from has whole seconds.
const cliSkewLimit = 2 * time.Second

// doctorReport is what `millrace doctor --json` prints.
type doctorReport struct {
	Health api.Health     `json:"health"`
	Ops    *api.OpsReport `json:"ops,omitempty"`
	// OpsError says why GET /api/ops could not be read (an older server,
	// a token without a reader role).
	OpsError string `json:"ops_error,omitempty"`
	// CLIClockSkewSeconds is this machine's clock minus the server's.
	CLIClockSkewSeconds *float64 `json:"cli_clock_skew_seconds,omitempty"`
	// Problems are the server's and doctor's own (cli_clock_skew).
	Problems []api.OpsProblem `json:"problems"`
}

func doctorCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a running server: store, NATS, consumer lag, outbox, unclaimed commands, expired leases, clock skew and workers online",
		Long: "Reads GET /api/health and GET /api/ops and prints what needs attention with a hint for each.\n" +
			"Exits 1 when the server is degraded or a problem of severity error exists (warnings only print).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := cf.client()
			ctx := cmd.Context()
			h, err := c.Health(ctx)
			if h.Status == "" && err != nil {
				return err
			}
			rep := doctorReport{Health: h, Problems: []api.OpsProblem{}}
			if ops, skew, ok, err := c.Ops(ctx); err != nil {
				rep.OpsError = err.Error()
			} else {
				rep.Ops = &ops
				rep.Problems = append(rep.Problems, ops.Problems...)
				if ok {
					s := skew.Seconds()
					rep.CLIClockSkewSeconds = &s
					if skew.Abs() > cliSkewLimit {
						rep.Problems = append(rep.Problems, api.OpsProblem{Code: "cli_clock_skew", Severity: api.SeverityWarning,
							Message: fmt.Sprintf("this machine's clock is %s off the server's", skew.Round(time.Second)),
							Hint:    "synchronise clocks with NTP (timestamps this CLI prints or sends are compared with the server's)"})
					}
				}
			}
			failed := h.Status != "ok" || (h.Detail != nil && h.Detail.QueriesStalled != "")
			for _, p := range rep.Problems {
				failed = failed || p.Severity == api.SeverityError
			}
			if cf.json {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
				if failed {
					return exitError{code: 1, msg: "the server needs attention; see the problems in the report", reported: true}
				}
				return nil
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "server   %s\nstatus   %s\nstore    %s\nnats     %s\n", cf.server, h.Status, h.Store, h.NATS)
			fmt.Fprintf(out, "token    %s\n", tokenStatus(ctx, c))
			if st := h.Stats; st != nil {
				fmt.Fprintf(out, "flows    %d running executions, %d pending commands, outbox %d\n", st.ExecutionsRunning, st.CommandsPending, st.OutboxDepth)
			}
			if d := h.Detail; d != nil {
				if q := d.Queries; q != nil {
					fmt.Fprintf(out, "queries  %d queued, %d executing\n", q.Queued, q.Executing)
				}
				if d.QueriesStalled != "" {
					fmt.Fprintf(out, "PROBLEM  %s\n", d.QueriesStalled)
				}
			}
			printOps(out, rep)
			if failed {
				return exitError{code: 1, msg: "the server needs attention; see above"}
			}
			if len(rep.Problems) > 0 {
				fmt.Fprintln(out, "no errors (warnings above)")
				return nil
			}
			fmt.Fprintln(out, "all good")
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}

// printOps prints the sections read from GET /api/ops, then the problems
// with their hints.
func printOps(out io.Writer, rep doctorReport) {
	o := rep.Ops
	if o == nil {
		fmt.Fprintf(out, "ops      not available: %s\n", rep.OpsError)
		return
	}
	fmt.Fprintf(out, "outbox   %d rows, oldest due %s\n", o.Outbox.Depth, ageText(o.Outbox.OldestAgeSeconds))
	fmt.Fprintf(out, "commands %d unclaimed (oldest %s), %d expired leases (oldest %s)\n", o.Commands.Unclaimed,
		ageText(o.Commands.UnclaimedOldestAgeSeconds), o.Commands.ExpiredLeases, ageText(o.Commands.ExpiredLeaseOldestAgeSeconds))
	clock := "server - database unknown (store unreadable)"
	if o.DatabaseTime != nil {
		clock = fmt.Sprintf("server - database %+.3fs", o.ClockSkewSeconds)
	}
	if rep.CLIClockSkewSeconds != nil {
		clock += fmt.Sprintf(", this machine - server %+.0fs (±1s)", math.Round(*rep.CLIClockSkewSeconds))
	}
	fmt.Fprintf(out, "clock    %s\n", clock)
	printWorkers(out, o.Workers)
	if !o.NATS.Connected {
		fmt.Fprintln(out, "lag      unknown: the server is not connected to NATS")
	}
	for _, s := range o.NATS.Streams {
		if s.Error != "" {
			fmt.Fprintf(out, "lag      %s: %s\n", s.Name, s.Error)
			continue
		}
		for _, c := range s.Consumers {
			pool := "" // the default pool's durable and the query lanes
			if c.Pool != "" {
				pool = " pool " + c.Pool
			}
			fmt.Fprintf(out, "lag      %s/%s%s %d (unprocessed %d, ack pending %d, redelivered %d, waiting pulls %d)\n",
				s.Name, c.Name, pool, c.Lag, c.Unprocessed, c.AckPending, c.Redelivered, c.Waiting)
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(out, "PROBLEM  [%s] %s: %s\n         hint: %s\n", p.Severity, p.Code, p.Message, p.Hint)
	}
}

// printWorkers prints one line per kind: workers online and busy slots,
// with the pools named.
func printWorkers(out io.Writer, ws []api.OpsWorkers) {
	byKind := map[string][]api.OpsWorkers{}
	var kinds []string
	for _, w := range ws {
		if _, ok := byKind[w.Kind]; !ok {
			kinds = append(kinds, w.Kind)
		}
		byKind[w.Kind] = append(byKind[w.Kind], w)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		online, slots, busy := 0, 0, 0
		var pools []string
		for _, w := range byKind[k] {
			online, slots, busy = online+w.Online, slots+w.Slots, busy+w.Busy
			name := w.Pool
			if name == "" {
				name = "default"
			}
			pools = append(pools, fmt.Sprintf("%s %d", name, w.Online))
		}
		fmt.Fprintf(out, "workers  %s: %d online (%s), %d/%d slots busy\n", k, online, strings.Join(pools, ", "), busy, slots)
	}
}

func ageText(s float64) string {
	if s <= 0 {
		return "-"
	}
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}
