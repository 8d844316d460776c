package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/store"
)

// tokenFlags are the client flags plus --database-url: with a database
// the token commands work on the store itself, which is how the first
// admin token is made (no token exists yet to ask the API with).
type tokenFlags struct {
	clientFlags
	databaseURL string
}

func (f *tokenFlags) bind(cmd *cobra.Command) {
	f.clientFlags.bind(cmd)
	cmd.Flags().StringVar(&f.databaseURL, "database-url", "",
		"Work on this event store directly instead of through the API [$DATABASE_URL] (the server's; how the first admin token is made)")
}

// store opens the event store when --database-url or DATABASE_URL names
// one; ok is false otherwise (then the API is used).
func (f *tokenFlags) store(ctx context.Context) (st *store.Store, gen *ids.Generator, ok bool, err error) {
	u := f.databaseURL
	if u == "" {
		u = os.Getenv("DATABASE_URL")
	}
	if u == "" {
		return nil, nil, false, nil
	}
	st, gen, err = openTokenStore(ctx, u)
	return st, gen, err == nil, err
}

// openTokenStore opens the event store at url (applying migrations) with an
// id generator whose node cannot collide with a running server's.
func openTokenStore(ctx context.Context, url string) (*store.Store, *ids.Generator, error) {
	drv, err := server.OpenDriver(ctx, url)
	if err != nil {
		return nil, nil, fmt.Errorf("open the event store: %w", err)
	}
	return storeWithIDs(ctx, drv)
}

// storeWithIDs wraps a migrated driver in a Store, with an id generator
// whose node cannot collide with a running server's. It closes drv on
// error.
func storeWithIDs(ctx context.Context, drv store.Driver) (*store.Store, *ids.Generator, error) {
	var err error
	node := -1 // SQLite: a random node, as a server there takes
	if alloc, ok := drv.(store.NodeAllocator); ok {
		if node, err = alloc.AllocateNode(ctx); err != nil {
			drv.Close()
			return nil, nil, fmt.Errorf("allocate an id node: %w", err)
		}
	}
	return store.New(drv, store.Options{}), ids.New(node), nil
}

// tokenCmd is `millrace token create|list|revoke`.
func tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Make, list and revoke API tokens",
		Long: `Make, list and revoke API tokens. A token has one role: admin (everything
but the workers' routes), operator (run and cancel), viewer (read) or worker
(claim, report, read credential data).

Through the API these need an admin token (--token or MILLRACE_TOKEN; next to
a running millrace dev, its admin token). With DATABASE_URL (or
--database-url) set to the server's event store they work on the store
directly and need no token: that is how the first admin token is made.`,
		Example: `  DATABASE_URL=postgres://millrace@db:5432/millrace millrace token create --role admin --name alice
  export MILLRACE_TOKEN=...   # the admin token
  millrace token create --role worker --name pool-a --expires 30d
  millrace token list
  millrace token revoke pool-a`,
	}
	cmd.AddCommand(tokenCreateCmd(), tokenListCmd(), tokenRevokeCmd())
	return cmd
}

func tokenCreateCmd() *cobra.Command {
	var f tokenFlags
	var role, name, expires string
	cmd := &cobra.Command{
		Use:   "create --role ROLE",
		Short: "Make an API token; its secret is printed once, alone on stdout",
		Long: `Make an API token of --role admin, operator, viewer or worker. The secret
is printed once, alone on stdout (TOKEN=$(millrace token create ...) works);
what was made goes to stderr. The server keeps only its hash.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !auth.ValidRole(role) {
				return fmt.Errorf("--role %q: want one of %s", role, strings.Join(auth.Roles, ", "))
			}
			exp, err := parseExpiry(expires, time.Now())
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var made api.TokenCreated
			st, gen, direct, err := f.store(ctx)
			if err != nil {
				return err
			}
			if direct {
				defer st.Close()
				made, err = auth.CreateToken(ctx, st, gen, role, name, "cli:"+osUser(), exp)
			} else {
				made, err = f.client().TokenCreate(ctx, api.TokenCreate{Role: role, Name: name, ExpiresAt: exp})
			}
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), made)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "made token %d%s, role %s, %s; its secret (on stdout) is shown only now: keep it safe\n",
				made.ID, quotedName(made.Name), made.Role, expiryText(made.ExpiresAt))
			_, err = fmt.Fprintln(cmd.OutOrStdout(), made.Secret)
			return err
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&role, "role", "", "Role of the token: admin, operator, viewer or worker (required)")
	cmd.Flags().StringVar(&name, "name", "", "Name to list and revoke it by")
	cmd.Flags().StringVar(&expires, "expires", "", "Expiry: a duration (720h, 30d) or a date (2027-01-31, or RFC 3339); empty never expires")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func tokenListCmd() *cobra.Command {
	var f tokenFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List API tokens (revoked ones too); never their secrets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, _, direct, err := f.store(ctx)
			if err != nil {
				return err
			}
			var list []api.Token
			if direct {
				defer st.Close()
				list, err = auth.ListTokens(ctx, st)
			} else {
				list, err = f.client().TokenList(ctx)
			}
			if err != nil {
				return err
			}
			if f.json {
				if list == nil {
					list = []api.Token{}
				}
				return printJSON(cmd.OutOrStdout(), api.TokenList{Tokens: list})
			}
			return printTokens(cmd.OutOrStdout(), list)
		},
	}
	f.bind(cmd)
	return cmd
}

func tokenRevokeCmd() *cobra.Command {
	var f tokenFlags
	cmd := &cobra.Command{
		Use:   "revoke ID|NAME",
		Short: "Revoke an API token by id, or by name when one live token has it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, _, direct, err := f.store(ctx)
			if err != nil {
				return err
			}
			var t api.Token
			if direct {
				defer st.Close()
				t, err = auth.RevokeToken(ctx, st, args[0])
			} else {
				t, err = f.client().TokenRevoke(ctx, args[0])
			}
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), t)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %d%s (role %s)\n", t.ID, quotedName(t.Name), t.Role)
			return nil
		},
	}
	f.bind(cmd)
	return cmd
}

func printTokens(w io.Writer, list []api.Token) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tEXPIRES\tLAST USED\tREVOKED")
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, t := range list {
		name := t.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, name, t.Role, t.CreatedAt.UTC().Format(time.RFC3339),
			when(t.ExpiresAt), when(t.LastUsedAt), when(t.RevokedAt))
	}
	return tw.Flush()
}

// parseExpiry reads --expires: "" (never), a Go duration (720h), a number
// of days (30d), a date (2027-01-31, midnight UTC) or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (*time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var t time.Time
	if d, err := time.ParseDuration(s); err == nil {
		t = now.Add(d)
	} else if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil && strings.HasSuffix(s, "d") {
		t = now.AddDate(0, 0, n)
	} else if d, err := time.Parse("2006-01-02", s); err == nil {
		t = d
	} else if d, err := time.Parse(time.RFC3339, s); err == nil {
		t = d
	} else {
		return nil, fmt.Errorf("--expires %q: give a duration (720h, 30d) or a date (2027-01-31 or 2027-01-31T12:00:00Z)", s)
	}
	if !t.After(now) {
		return nil, fmt.Errorf("--expires %q is not in the future", s)
	}
	t = t.UTC().Truncate(time.Second)
	return &t, nil
}

func expiryText(t *time.Time) string {
	if t == nil {
		return "never expires"
	}
	return "expires " + t.UTC().Format(time.RFC3339)
}

func quotedName(n string) string {
	if n == "" {
		return ""
	}
	return fmt.Sprintf(" %q", n)
}

func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}

// Dev mode's tokens: an admin token kept in the data directory for the
// client commands (and the user), and a worker token for its own workers.
const (
	devAdminName     = "dev-admin"
	devWorkerName    = "dev-worker"
	devAdminFileName = "admin.token"
)

// devTokens makes sure dev's store holds a live admin token whose secret
// is in DATA_DIR/admin.token (reusing the file's when it is still a valid
// admin token, else making one), and makes a fresh worker token for dev's
// in-process workers, revoking the ones earlier runs made.
func devTokens(ctx context.Context, databaseURL, dataDir string) (adminFile, workerToken string, err error) {
	st, gen, err := openTokenStore(ctx, databaseURL)
	if err != nil {
		return "", "", err
	}
	defer st.Close()
	// Absolute: dev.json names it for clients started anywhere.
	if adminFile, err = filepath.Abs(filepath.Join(dataDir, devAdminFileName)); err != nil {
		return "", "", err
	}
	if !devAdminValid(ctx, st, adminFile) {
		made, err := auth.CreateToken(ctx, st, gen, api.RoleAdmin, devAdminName, "millrace dev", nil)
		if err != nil {
			return "", "", fmt.Errorf("make dev's admin token: %w", err)
		}
		if err := writeSecretFile(adminFile, made.Secret); err != nil {
			return "", "", err
		}
	}
	list, err := auth.ListTokens(ctx, st)
	if err != nil {
		return "", "", err
	}
	for _, t := range list {
		if t.Name == devWorkerName && t.RevokedAt == nil {
			if _, err := auth.RevokeToken(ctx, st, strconv.FormatInt(t.ID, 10)); err != nil {
				return "", "", fmt.Errorf("revoke an earlier dev worker token: %w", err)
			}
		}
	}
	made, err := auth.CreateToken(ctx, st, gen, api.RoleWorker, devWorkerName, "millrace dev", nil)
	if err != nil {
		return "", "", fmt.Errorf("make dev's worker token: %w", err)
	}
	return adminFile, made.Secret, nil
}

// devAdminValid reports whether path holds the secret of a live admin API
// token of this store.
func devAdminValid(ctx context.Context, st *store.Store, path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	t, err := store.ReadValue(ctx, st, func(q store.Querier) (store.AuthToken, error) {
		return q.AuthTokenByHash(ctx, auth.Hash(strings.TrimSpace(string(b))))
	})
	if err != nil {
		return false
	}
	return t.Kind == store.TokenAPI && t.Role == api.RoleAdmin && t.RevokedAt == nil &&
		(t.ExpiresAt == nil || t.ExpiresAt.After(time.Now()))
}

// writeSecretFile writes secret to path, readable by its owner only.
func writeSecretFile(path, secret string) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(tmp))
	}
	return nil
}

// readSecret returns the trimmed content of path, "" for no path.
func readSecret(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
