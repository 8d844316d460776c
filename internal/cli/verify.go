package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/verify"
)

// verifyUsage is the exit code of a usage or connection error: 1 is kept
// for "the store breaks an invariant".
const verifyUsage = 2

func verifyCmd() *cobra.Command {
	var dbURL, since string
	var reap time.Duration
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the event store's invariants (after an incident; the fault tests' oracle)",
		Long: `Read the event store at DATABASE_URL and check that its rows agree:

  command_completed_once   every command has at most one command.completed
  terminal_event           a terminal execution has its terminal event, and an
                           execution with one is terminal
  execution_projection     an execution's status is its last terminal event's
  command_projection       a command's status agrees with its command.* events
  loop_projection          a loop agrees with its iteration commands
  outbox_orphan            an outbox row's command, query or build still waits
  notification_pending     no live command has had a notification pending (or an
                           outbox row been due) for longer than --reap-interval

It only reads, and each check aggregates in the database, so it is safe on a
live store; run it when the store is quiet (after an incident, or once every
execution ended) to read the answer without in-flight work. It prints each
violation with its execution and command ids and exits 1 when there is any,
2 on a usage or connection error, 0 when every invariant holds.

Without --database-url or DATABASE_URL it reads dev mode's store
(MILLRACE_DATA_DIR/millrace.db) when there is one here.`,
		Example: `  DATABASE_URL=postgres://millrace@db:5432/millrace millrace verify
  millrace verify --since 2h --json           # executions started in the last 2 hours
  millrace verify --database-url sqlite:.millrace/millrace.db --limit 10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := store.VerifyOptions{ReapInterval: reap, Limit: limit, Now: time.Now().UTC()}
			var err error
			if opts.Since, err = parseSince(since, opts.Now); err != nil {
				return exitError{code: verifyUsage, msg: err.Error()}
			}
			if limit < 0 || reap <= 0 {
				return exitError{code: verifyUsage, msg: "--limit must be 0 (no limit) or more and --reap-interval more than 0"}
			}
			if dbURL == "" {
				if dbURL, err = verifyDefaultURL(); err != nil {
					return exitError{code: verifyUsage, msg: err.Error()}
				}
			}
			ctx := cmd.Context()
			drv, err := server.Connect(ctx, dbURL)
			if err != nil {
				return exitError{code: verifyUsage, msg: fmt.Sprintf("open the event store %s: %v", redactedStore(dbURL), err)}
			}
			defer drv.Close()
			v, ok := drv.(store.Verifier)
			if !ok {
				return exitError{code: verifyUsage, msg: "the " + drv.Name() + " driver cannot verify"}
			}
			rep, err := verify.Run(ctx, v, opts)
			if err != nil {
				return exitError{code: verifyUsage, msg: fmt.Sprintf("verify %s: %v (is the schema migrated? millrace migrate)", redactedStore(dbURL), err)}
			}
			if asJSON {
				if err := rep.WriteJSON(cmd.OutOrStdout()); err != nil {
					return err
				}
			} else {
				rep.WriteText(cmd.OutOrStdout())
			}
			if !rep.OK {
				return exitError{code: 1, msg: fmt.Sprintf("%d invariant violation(s)", len(rep.Violations)), reported: true}
			}
			return nil
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return exitError{code: verifyUsage, msg: err.Error()}
	})
	f := cmd.Flags()
	f.StringVar(&dbURL, "database-url", os.Getenv("DATABASE_URL"), "Event store to read: postgres://… or sqlite:PATH [$DATABASE_URL]")
	f.DurationVar(&reap, "reap-interval", config.DefaultReapInterval, "How long a due notification may stay pending before notification_pending reports it (the servers' MILLRACE_REAP_INTERVAL_SECONDS)")
	f.StringVar(&since, "since", "", "Only executions started after this: a duration ago (2h) or an RFC 3339 time")
	f.IntVar(&limit, "limit", 100, "Violations printed per check at most (0: all)")
	f.BoolVar(&asJSON, "json", false, `Print {"ok","checked","violations":[{"check","execution_id","command_id","detail"}]}`)
	return cmd
}

// parseSince reads --since: empty, a duration before now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration ago (2h, 30m) or an RFC 3339 time (2026-01-02T15:04:05Z)", s)
}

// verifyDefaultURL is dev mode's store, when it exists here.
func verifyDefaultURL() (string, error) {
	path := filepath.Join(devDataDir(), "millrace.db")
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("no event store given and no dev store at %s: set DATABASE_URL or --database-url", path)
		}
		return "", err
	}
	return "sqlite:" + path, nil
}
