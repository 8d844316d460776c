// Package cli is the millrace command line: the server, worker and dev
// roles, and the client commands that drive a running server.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/telemetry"
)

// Execute runs the CLI and returns the process exit code.
func Execute() int {
	// Set once, before anything runs (tests build roots in parallel).
	telemetry.ServiceVersion = Version()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := NewRoot(out, errOut)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ue *url.Error
	if errors.As(err, &ue) && cmd != nil && cmd.Flags().Lookup("server") != nil {
		err = fmt.Errorf("%w; or start `millrace dev` in this directory (client commands find it through %s)", err, filepath.Join(devDataDir(), devFileName))
	}
	err = authHint(err)
	fmt.Fprintln(errOut, "error:", err)
	var e exitError
	if wantsJSON(cmd) && !(errors.As(err, &e) && e.reported) {
		// Scripts read stdout: give them the API's error envelope rather
		// than nothing (or a bare null).
		_ = printJSON(out, errorEnvelope(err))
	}
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

// authHint adds what to do next to the server's 401 and 403 answers.
func authHint(err error) error {
	var e *client.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code {
	case "unauthenticated":
		return fmt.Errorf("%w\nset %s or --token to an API token the server accepts; an admin makes one with: millrace token create --role operator", err, tokenEnv)
	case "forbidden":
		return fmt.Errorf("%w\nthe token's role may not do this: use a token of a role the message names (millrace token create --role ROLE, by an admin)", err)
	}
	return err
}

// exitError ends a command with an exit code. reported says the command
// already printed its outcome (with --json, as JSON), so no error envelope
// follows it.
type exitError struct {
	code     int
	msg      string
	reported bool
}

func (e exitError) Error() string { return e.msg }

// wantsJSON reports whether cmd was run with --json.
func wantsJSON(cmd *cobra.Command) bool {
	if cmd == nil {
		return false
	}
	f := cmd.Flags().Lookup("json")
	return f != nil && f.Value.String() == "true"
}

// errorEnvelope renders err in the shape the HTTP API uses:
// {"error": {"code": "...", "message": "..."}}. API errors keep their code;
// a server that cannot be reached is server_unreachable; anything else the
// CLI found wrong is cli_error, or the code the command gave.
func errorEnvelope(err error) map[string]any {
	code := "cli_error"
	msg := err.Error()
	var api *client.Error
	var ue *url.Error
	var ee exitError
	switch {
	case errors.As(err, &api):
		code = api.Code
	case errors.As(err, &ue):
		code = "server_unreachable"
	case errors.As(err, &ee) && ee.code == 1:
		code = "failed"
	}
	return map[string]any{"error": map[string]string{"code": code, "message": msg}}
}

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
  millrace gateway   the browser edge: logins, an authenticated proxy, live updates (SSE)

Every setting is an environment variable with a matching flag; see
docs/configuration.md or the --help of each command.`,
		Version:       Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("millrace {{.Version}}\n")
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddCommand(serverCmd(), workerCmd(), devCmd(),
		registerCmd(), catalogCmd(), executeCmd(), statusCmd(), eventsCmd(), executionsCmd(), cancelCmd(),
		natsCmd(), configCmd(), runCmd(), validateCmd(), queryCmd(), preaggCmd(), doctorCmd(), benchCmd())
	root.AddCommand(credentialCmd(), tokenCmd(), gatewayCmd(), migrateCmd(), versionCmd(), verifyCmd())
	for _, c := range root.Commands() {
		strictGroups(c)
	}
	return root
}

// strictGroups makes every command group below the root refuse an unknown
// subcommand. Cobra only checks at the root: `millrace nats stream ls`
// would print the group's help and exit 0.
func strictGroups(cmd *cobra.Command) {
	if !cmd.HasSubCommands() {
		return
	}
	if !cmd.Runnable() {
		cmd.Args = cobra.ArbitraryArgs
		cmd.SuggestionsMinimumDistance = 2
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name())
				}
			}
			return fmt.Errorf("%s (its commands: %s; see '%s --help')", msg, strings.Join(names, ", "), cmd.CommandPath())
		}
	}
	for _, c := range cmd.Commands() {
		strictGroups(c)
	}
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
	cmd    *cobra.Command
	server string
	token  string
	json   bool
}

func (c *clientFlags) bind(cmd *cobra.Command) {
	c.cmd = cmd
	def := os.Getenv("SERVER_API_URL")
	if def == "" {
		def = config.DefaultServerURL
	}
	cmd.Flags().StringVar(&c.server, "server", def,
		"Millrace API server URL [$SERVER_API_URL] (unset: the running millrace dev recorded in $MILLRACE_DATA_DIR/dev.json, else this default)")
	// No default from the environment: --help must not print a secret.
	cmd.Flags().StringVar(&c.token, "token", "",
		"API token sent as Authorization: Bearer [$MILLRACE_TOKEN] (unset: the admin token of the running millrace dev this command talks to)")
	cmd.Flags().BoolVar(&c.json, "json", false, "Print machine-readable JSON (errors too, as {\"error\": {\"code\", \"message\"}})")
}

// client returns a client for --server, else $SERVER_API_URL, else the
// running dev instance, else the default URL; with the token from --token,
// else $MILLRACE_TOKEN, else that dev instance's admin token.
func (c *clientFlags) client() *client.Client {
	d, found := findDev()
	if found && (c.cmd == nil || !c.cmd.Flags().Changed("server")) && os.Getenv("SERVER_API_URL") == "" {
		c.server = d.APIURL
	}
	tok := c.token
	if tok == "" {
		tok = os.Getenv(tokenEnv)
	}
	if tok == "" && found {
		tok = devToken(d, c.server)
	}
	return client.New(c.server).WithToken(tok)
}

// tokenEnv names the client commands' token variable.
const tokenEnv = "MILLRACE_TOKEN"

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
