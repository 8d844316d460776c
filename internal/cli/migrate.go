package cli

import (
	"fmt"
	"io"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
)

// migrateReport is what `millrace migrate --json` prints.
type migrateReport struct {
	Driver string `json:"driver"`
	// Store is DATABASE_URL with its password hidden, so a Job's log says
	// which database it migrated.
	Store string `json:"store"`
	// From and To are the schema's migration versions before and after;
	// Latest is this binary's. From > Latest: an older binary, nothing
	// applied.
	From   int             `json:"from"`
	To     int             `json:"to"`
	Latest int             `json:"latest"`
	Tokens []ensuredReport `json:"tokens"`
}

type ensuredReport struct {
	Env  string `json:"env"`
	Name string `json:"name"`
	Role string `json:"role"`
	ID   int64  `json:"id"`
	// Made is false when the store already had the secret.
	Made bool `json:"made"`
}

// helmToken is a token a deployment hands one of its roles, as
// --ensure-tokens registers it.
type helmToken struct {
	env, name, role, secret string
}

func migrateCmd() *cobra.Command {
	var cfg config.Migrate
	var asJSON, ensureTokens bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations (and, with --ensure-tokens, register a deployment's tokens)",
		Long: `Apply the pending migrations of the event store at DATABASE_URL and print
the schema version before and after. Safe to run again (nothing to do) and
from several processes at once (they take turns).

Servers migrate at start unless MILLRACE_MIGRATE=false: the Helm chart sets
that and runs this command in a pre-install/pre-upgrade hook Job, so the
schema is current before any new server starts and servers never race a
migration. A server with MILLRACE_MIGRATE=false refuses to start on a schema
older than it needs.

With --ensure-tokens it then registers the API tokens given in
MILLRACE_WORKER_TOKEN (role worker, named helm-worker),
MILLRACE_GATEWAY_TOKEN (role operator, helm-gateway) and MILLRACE_ADMIN_TOKEN
(role admin, helm-admin), each unless the store already has it: a
deployment chooses its tokens' secrets (the chart keeps them in its Secret)
and this makes the store accept them. An unset one is skipped. A value that
is not an API token secret (mrt_ and 43 characters), or one the store has
with another role or revoked, is an error.`,
		Example: `  DATABASE_URL=postgres://millrace@db:5432/millrace millrace migrate
  millrace migrate --json --ensure-tokens      # the Helm hook Job`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tokens := []helmToken{
				{"MILLRACE_WORKER_TOKEN", "helm-worker", api.RoleWorker, cfg.WorkerToken},
				{"MILLRACE_GATEWAY_TOKEN", "helm-gateway", api.RoleOperator, cfg.GatewayToken},
				{"MILLRACE_ADMIN_TOKEN", "helm-admin", api.RoleAdmin, cfg.AdminToken},
			}
			if ensureTokens {
				// Check them all before touching the store: a typo in the
				// Secret should not leave a half-done run behind.
				for _, t := range tokens {
					if t.secret == "" {
						continue
					}
					if err := auth.CheckAPISecret(t.secret); err != nil {
						return fmt.Errorf("%s: %w", t.env, err)
					}
				}
			}
			rep, err := runMigrate(cmd, cfg.DatabaseURL, ensureTokens, tokens)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			printMigrate(cmd.OutOrStdout(), rep, ensureTokens)
			return nil
		},
	}
	bindSet(cmd, config.MigrateSet(&cfg))
	cmd.Flags().BoolVar(&asJSON, "json", false, "Print the outcome as JSON")
	cmd.Flags().BoolVar(&ensureTokens, "ensure-tokens", false, "Also register MILLRACE_WORKER_TOKEN, MILLRACE_GATEWAY_TOKEN and MILLRACE_ADMIN_TOKEN unless the store has them")
	return cmd
}

func runMigrate(cmd *cobra.Command, databaseURL string, ensureTokens bool, tokens []helmToken) (migrateReport, error) {
	ctx := cmd.Context()
	drv, err := server.Connect(ctx, databaseURL)
	if err != nil {
		return migrateReport{}, fmt.Errorf("open the event store (DATABASE_URL): %w", err)
	}
	closeDrv := true
	defer func() {
		if closeDrv {
			drv.Close()
		}
	}()
	before, err := server.ReadSchema(ctx, drv)
	if err != nil {
		return migrateReport{}, err
	}
	if err := drv.Migrate(ctx); err != nil {
		return migrateReport{}, fmt.Errorf("apply migrations: %w (nothing past the failed migration was applied; fix the cause and run millrace migrate again)", err)
	}
	after, err := server.ReadSchema(ctx, drv)
	if err != nil {
		return migrateReport{}, err
	}
	rep := migrateReport{Driver: drv.Name(), Store: redactedStore(databaseURL), From: before.Applied, To: after.Applied, Latest: after.Latest, Tokens: []ensuredReport{}}
	if !ensureTokens {
		return rep, nil
	}
	closeDrv = false // the store owns it now
	st, gen, err := storeWithIDs(ctx, drv)
	if err != nil {
		return migrateReport{}, err
	}
	defer st.Close()
	for _, t := range tokens {
		if t.secret == "" {
			continue
		}
		e, err := auth.EnsureToken(ctx, st, gen, t.secret, t.role, t.name, "millrace migrate")
		if err != nil {
			return migrateReport{}, fmt.Errorf("%s: %w", t.env, err)
		}
		rep.Tokens = append(rep.Tokens, ensuredReport{Env: t.env, Name: e.Token.Name, Role: e.Token.Role, ID: e.Token.ID, Made: e.Made})
	}
	return rep, nil
}

func printMigrate(w io.Writer, rep migrateReport, ensureTokens bool) {
	switch {
	case rep.From > rep.Latest:
		fmt.Fprintf(w, "schema   %s at migration %d, newer than this binary's %d: nothing to apply (an older millrace; roll forward)\n", rep.Store, rep.From, rep.Latest)
	case rep.From == rep.To:
		fmt.Fprintf(w, "schema   %s at migration %d: up to date, nothing applied\n", rep.Store, rep.To)
	default:
		fmt.Fprintf(w, "schema   %s migrated from %d to %d (%d applied)\n", rep.Store, rep.From, rep.To, rep.To-rep.From)
	}
	if !ensureTokens {
		return
	}
	if len(rep.Tokens) == 0 {
		fmt.Fprintln(w, "tokens   none given (MILLRACE_WORKER_TOKEN, MILLRACE_GATEWAY_TOKEN, MILLRACE_ADMIN_TOKEN are unset)")
	}
	for _, t := range rep.Tokens {
		what := "already registered"
		if t.Made {
			what = "registered"
		}
		fmt.Fprintf(w, "token    %s: %s %q, role %s, id %d\n", t.Env, what, t.Name, t.Role, t.ID)
	}
}

// redactedStore is a DATABASE_URL fit for a log: a URL's password
// replaced by xxxxx, a keyword/value string reduced to its driver.
func redactedStore(dbURL string) string {
	u, err := url.Parse(dbURL)
	switch {
	case err != nil:
		return "DATABASE_URL"
	case u.Scheme == "sqlite":
		return dbURL
	case u.User != nil || u.Host != "":
		return u.Redacted()
	}
	return "DATABASE_URL"
}
