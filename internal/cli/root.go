// Package cli is the millrace command line: the server, worker and dev
// roles, and the client commands that drive a running server.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
)

// Execute runs the CLI and returns the process exit code.
func Execute() int {
	root := NewRoot(os.Stdout, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		if e, ok := err.(exitError); ok {
			return e.code
		}
		return 1
	}
	return 0
}

type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// NewRoot builds the command tree writing to out and errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "millrace",
		Short: "Millrace: durable work distribution over NATS JetStream",
		Long: `Millrace records every fact in an event table (PostgreSQL or SQLite), publishes
small notifications to NATS JetStream, and lets worker pools claim and run the work.

Roles:
  millrace dev       everything in one process: embedded NATS, SQLite, server, workers
  millrace server    the API server (point it at a real NATS and PostgreSQL)
  millrace worker    a worker (any number, on any number of machines)

Every setting is an environment variable with a matching flag; see
docs/configuration.md or the --help of each command.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddCommand(serverCmd(), workerCmd(), devCmd(),
		registerCmd(), catalogCmd(), executeCmd(), statusCmd(), eventsCmd(), executionsCmd(), cancelCmd(),
		natsCmd(), configCmd(), runCmd(), validateCmd(), queryCmd(), doctorCmd(), benchCmd())
	root.AddCommand(credentialCmd())
	return root
}

// bindSet attaches a settings set to a command's flags, failing the command
// early with a message that names a bad environment variable.
func bindSet(cmd *cobra.Command, s *config.Set) {
	if err := s.Bind(cmd.Flags()); err != nil {
		cmd.PreRunE = func(*cobra.Command, []string) error { return err }
	}
}

func newLogger(l config.Log, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("MILLRACE_LOG_LEVEL %q: use debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(l.Format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("MILLRACE_LOG_FORMAT %q: use text or json", l.Format)
}

// clientFlags are shared by the commands that talk to a server.
type clientFlags struct {
	server string
	json   bool
}

func (c *clientFlags) bind(cmd *cobra.Command) {
	def := os.Getenv("SERVER_API_URL")
	if def == "" {
		def = config.DefaultServerURL
	}
	cmd.Flags().StringVar(&c.server, "server", def, "Millrace API server URL [$SERVER_API_URL]")
	cmd.Flags().BoolVar(&c.json, "json", false, "Print machine-readable JSON")
}

func (c *clientFlags) client() *client.Client { return client.New(c.server) }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
