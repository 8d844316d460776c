package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/millrace/millrace/internal/sqlvalue"
)

const (
	// DefaultPostgresTimeout bounds connecting plus running the command.
	DefaultPostgresTimeout = 60 * time.Second
	// pgCancelDeadline is how long, after the context ends, the server has
	// to honour the cancel request before the socket is closed under it.
	pgCancelDeadline = 3 * time.Second
	// pgCloseTimeout bounds the polite goodbye to the server.
	pgCloseTimeout = 5 * time.Second
	// pgDefaultPort is used when a credential names a host but no port.
	pgDefaultPort = "5432"
	// pgApplicationName identifies the tool's sessions in pg_stat_activity.
	pgApplicationName = "millrace"
)

var postgresKeys = []string{"auth", "connection", "command", "params", "timeout"}

// postgresTool runs "command" on one connection per invocation.
//
// Without params the command goes over the simple query protocol, so it may
// hold several statements separated by ';'. PostgreSQL runs such a string as
// one implicit transaction (unless it has its own BEGIN/COMMIT): a failing
// statement rolls back the ones before it. With params the command must be a
// single statement ($1, $2, ...).
//
// Result: {"rows": [{column: value}], "row_count", "columns", "rows_affected"}.
// rows and columns come from the last statement that returns rows (SELECT,
// ... RETURNING, SHOW); rows_affected sums INSERT, UPDATE, DELETE, MERGE and
// COPY counts over all statements. When more than one statement ran,
// "statements" lists each one's own {rows, row_count, columns,
// rows_affected}, in order, for NoETL's command_<i>. Values are JSON-friendly: see
// sqlvalue.FromPostgresText.
type postgresTool struct{}

func (postgresTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	commands, err := sqlCommands(cfg, "postgres", "command")
	if err != nil {
		return nil, err
	}
	params, err := sqlParams(cfg, "postgres")
	if err != nil {
		return nil, err
	}
	if len(params) > 0 && len(commands) > 1 {
		return nil, configError("postgres", "params", "needs a single command; a list of commands cannot share $1, $2, ...")
	}
	timeout, err := optSeconds(cfg, "postgres", "timeout", DefaultPostgresTimeout)
	if err != nil {
		return nil, err
	}
	dsn, err := postgresDSN(ctx, "postgres", cfg)
	if err != nil {
		return nil, err
	}
	connCfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from its parse errors.
		return nil, &Error{Kind: "postgres", Message: fmt.Sprintf("invalid connection settings: %v", err)}
	}
	if connCfg.RuntimeParams["application_name"] == "" {
		connCfg.RuntimeParams["application_name"] = pgApplicationName
	}
	// On cancel, ask the server to stop the query and wait for it to do so,
	// so it has stopped by the time Run returns. (The default handler drops
	// the socket first and sends the cancel request in the background.)
	connCfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: pgCancelDeadline}
	}
	where := fmt.Sprintf("%s:%d/%s", connCfg.Host, connCfg.Port, connCfg.Database)

	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(runCtx, connCfg)
	if err != nil {
		return nil, pgFailure(ctx, runCtx, timeout, "connecting to "+where, err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), pgCloseTimeout)
		defer cancel()
		conn.Close(closeCtx)
	}()

	if len(params) > 0 {
		res, err := pgQueryParams(runCtx, conn, commands[0], params)
		if err != nil {
			return nil, pgFailure(ctx, runCtx, timeout, "running the command on "+where, err)
		}
		return res.toMap(), nil
	}
	// A list runs in order, each entry as its own script; the result is
	// as if they were one: rows from the last that returns rows, writes
	// summed.
	res := &sqlResult{}
	for i, command := range commands {
		cur, err := pgQueryScript(runCtx, conn, command)
		if err != nil {
			stage := "running the command on " + where
			if len(commands) > 1 {
				stage = fmt.Sprintf("running command %d of %d on %s", i+1, len(commands), where)
			}
			return nil, pgFailure(ctx, runCtx, timeout, stage, err)
		}
		res.affected += cur.affected
		if cur.columns != nil {
			res.columns, res.rows = cur.columns, cur.rows
		}
		res.statements = append(res.statements, cur.statements...)
	}
	out := res.toMap()
	if len(res.statements) > 1 {
		// NoETL's older result was keyed per statement (command_0, ...),
		// and its fixtures still read it so: templates and python read
		// these as command_<i> (engine's sqlView).
		stmts := make([]any, len(res.statements))
		for i, st := range res.statements {
			stmts[i] = st.toMap()
		}
		out["statements"] = stmts
	}
	return out, nil
}

// sqlCommands returns cfg[key]: one SQL string, or a list of them (NoETL's
// `commands:`/`queries:` lists, renamed to key by the playbook parser).
func sqlCommands(cfg map[string]any, kind, key string) ([]string, error) {
	var out []string
	switch v := cfg[key].(type) {
	case string:
		out = []string{v}
	case []any:
		for i, c := range v {
			s, ok := c.(string)
			if !ok {
				return nil, configError(kind, key, "item %d must be a SQL string, got %s", i, describe(c))
			}
			out = append(out, s)
		}
	case nil:
	default:
		return nil, configError(kind, key, "must be SQL text or a list of SQL strings, got %s", describe(v))
	}
	out = slices.DeleteFunc(out, func(s string) bool { return strings.TrimSpace(s) == "" })
	if len(out) == 0 {
		return nil, configError(kind, key, "is required: give the SQL to run")
	}
	return out, nil
}

// sqlResult is the shape both SQL tools return.
type sqlResult struct {
	columns  []string
	rows     []any
	affected int64
	// statements are the script's statements one by one (pgQueryScript).
	statements []*sqlResult
}

func (r *sqlResult) toMap() map[string]any {
	cols := make([]any, len(r.columns))
	for i, c := range r.columns {
		cols[i] = c
	}
	rows := r.rows
	if rows == nil {
		rows = []any{}
	}
	return map[string]any{"columns": cols, "rows": rows, "row_count": len(rows), "rows_affected": r.affected}
}

// pgQueryScript runs one or more statements with the simple protocol, which
// returns every column as text; sqlvalue.FromPostgresText turns the text
// into JSON values.
func pgQueryScript(ctx context.Context, conn *pgx.Conn, script string) (*sqlResult, error) {
	res := &sqlResult{}
	mrr := conn.PgConn().Exec(ctx, script)
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		fds := rr.FieldDescriptions()
		var cur *sqlResult
		if len(fds) > 0 {
			cur = &sqlResult{columns: fieldNames(fds)}
		}
		for rr.NextRow() {
			if cur == nil {
				continue
			}
			row, err := pgRow(conn.TypeMap(), fds, rr.Values())
			if err != nil {
				mrr.Close()
				return nil, err
			}
			cur.rows = append(cur.rows, row)
		}
		tag, err := rr.Close()
		if err != nil {
			mrr.Close()
			return nil, err
		}
		res.affected += pgAffected(tag)
		if cur == nil {
			cur = &sqlResult{}
		} else {
			res.columns, res.rows = cur.columns, cur.rows
		}
		cur.affected = pgAffected(tag)
		res.statements = append(res.statements, cur)
	}
	if err := mrr.Close(); err != nil {
		return nil, err
	}
	return res, nil
}

// pgQueryParams runs a single statement with positional parameters. Results
// are requested as text so both paths share sqlvalue.FromPostgresText.
func pgQueryParams(ctx context.Context, conn *pgx.Conn, stmt string, params []any) (*sqlResult, error) {
	args := append([]any{pgx.QueryExecModeDescribeExec, pgx.QueryResultFormats{pgx.TextFormatCode}}, params...)
	rows, err := conn.Query(ctx, stmt, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	fds := rows.FieldDescriptions()
	res := &sqlResult{columns: fieldNames(fds)}
	for rows.Next() {
		row, err := pgRow(conn.TypeMap(), fds, rows.RawValues())
		if err != nil {
			return nil, err
		}
		res.rows = append(res.rows, row)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	res.affected = pgAffected(rows.CommandTag())
	return res, nil
}

func fieldNames(fds []pgconn.FieldDescription) []string {
	names := make([]string, len(fds))
	for i, fd := range fds {
		names[i] = fd.Name
	}
	return names
}

func pgRow(m *pgtype.Map, fds []pgconn.FieldDescription, raw [][]byte) (map[string]any, error) {
	row := make(map[string]any, len(fds))
	for i, fd := range fds {
		v, err := sqlvalue.FromPostgresText(m, fd.DataTypeOID, raw[i])
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", fd.Name, err)
		}
		row[fd.Name] = v
	}
	return row, nil
}

// pgAffected counts rows written by a statement; a SELECT's count is not.
func pgAffected(tag pgconn.CommandTag) int64 {
	s := tag.String()
	for _, p := range []string{"INSERT ", "UPDATE ", "DELETE ", "MERGE ", "COPY "} {
		if strings.HasPrefix(s, p) {
			return tag.RowsAffected()
		}
	}
	return 0
}

// pgRetryable SQLSTATEs: the same command may well succeed next time.
var pgRetryable = map[string]bool{
	"40001": true, // serialization_failure
	"40P01": true, // deadlock_detected
	"53300": true, // too_many_connections
	"57P01": true, // admin_shutdown
	"57P02": true, // crash_shutdown
	"57P03": true, // cannot_connect_now
}

// pgFailure classifies an error from connecting or running the command.
func pgFailure(ctx, runCtx context.Context, timeout time.Duration, stage string, err error) error {
	switch {
	case ctx.Err() != nil:
		return &Error{Kind: ErrorKindCanceled, Retryable: true,
			Message: fmt.Sprintf("postgres: %s was stopped because the worker canceled it: %v", stage, context.Cause(ctx))}
	case runCtx.Err() != nil:
		return &Error{Kind: "postgres", Retryable: true,
			Message: fmt.Sprintf("%s timed out after %s; raise timeout if the command is expected to be slow", stage, timeout)}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		msg := pgErr.Error()
		if pgErr.Detail != "" {
			msg += "; detail: " + pgErr.Detail
		}
		if pgErr.Hint != "" {
			msg += "; hint: " + pgErr.Hint
		}
		return &Error{Kind: "postgres", Message: stage + ": " + msg,
			Retryable: pgRetryable[pgErr.Code] || strings.HasPrefix(pgErr.Code, "08")}
	}
	// Otherwise the network or the connection failed under us (retryable),
	// or pgx rejected the call itself, e.g. a wrong number of params.
	var connErr *pgconn.ConnectError
	var netErr net.Error
	retryable := errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	return &Error{Kind: "postgres", Retryable: retryable, Message: fmt.Sprintf("%s: %v", stage, err)}
}

// sqlParams returns cfg["params"], a list of positional parameters. JSON
// numbers become int64 or float64 so the driver can encode them.
func sqlParams(cfg map[string]any, kind string) ([]any, error) {
	v, ok := cfg["params"]
	if !ok || v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, configError(kind, "params", "must be a list of values for $1, $2, ..., got %s", describe(v))
	}
	out := make([]any, len(list))
	for i, p := range list {
		if n, ok := p.(json.Number); ok {
			if iv, err := n.Int64(); err == nil {
				p = iv
			} else if f, err := n.Float64(); err == nil {
				p = f
			} else {
				p = n.String()
			}
		}
		out[i] = p
	}
	return out, nil
}

// postgresDSN returns the connection string for cfg's "auth" (a credential
// name) or "connection" (a URL or key=value string, for development).
func postgresDSN(ctx context.Context, kind string, cfg map[string]any) (string, error) {
	auth, err := optString(cfg, kind, "auth", "")
	if err != nil {
		return "", err
	}
	conn, err := optString(cfg, kind, "connection", "")
	if err != nil {
		return "", err
	}
	switch {
	case auth != "" && conn != "":
		return "", configError(kind, "connection", "cannot be combined with auth; give one of them")
	case conn != "":
		return conn, nil
	case auth == "":
		return "", configError(kind, "auth", "is required: name a postgres credential (or give connection: postgres://... for local development)")
	}
	return credentialDSN(ctx, kind, auth)
}

// credentialDSN resolves a postgres credential to a key=value connection
// string. The credential holds either "url"/"dsn", or "host", "port",
// "user", "password", "database" (or "dbname") and "sslmode".
func credentialDSN(ctx context.Context, kind, name string) (string, error) {
	env := EnvFrom(ctx)
	if env == nil {
		return "", &Error{Kind: kind, Message: fmt.Sprintf(
			"auth %q names a credential, but this run has no credential store; run it on a worker connected to a server, or use connection: postgres://... for local development", name)}
	}
	fields, err := env.Credential(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return "", &Error{Kind: ErrorKindCanceled, Retryable: true,
				Message: fmt.Sprintf("%s: looking up credential %q was stopped because the worker canceled it", kind, name)}
		}
		var te *Error
		if errors.As(err, &te) {
			return "", &Error{Kind: te.Kind, Retryable: te.Retryable, Message: fmt.Sprintf("credential %q: %s", name, te.Message)}
		}
		return "", &Error{Kind: kind, Message: fmt.Sprintf(
			"credential %q: %v; check the name with `millrace credential list`", name, err)}
	}
	for _, k := range []string{"url", "dsn"} {
		if v, ok := fields[k]; ok && v != nil {
			s, ok := v.(string)
			if !ok || s == "" {
				return "", &Error{Kind: kind, Message: fmt.Sprintf("credential %q: field %q must be a non-empty connection string", name, k)}
			}
			return s, nil
		}
	}
	get := func(keys ...string) (string, error) {
		for _, k := range keys {
			if v, ok := fields[k]; ok && v != nil {
				s, ok := scalarString(v)
				if !ok {
					return "", &Error{Kind: kind, Message: fmt.Sprintf("credential %q: field %q must be a string or number, got %s", name, k, describe(v))}
				}
				return s, nil
			}
		}
		return "", nil
	}
	var b strings.Builder
	for _, f := range []struct {
		param string
		keys  []string
	}{
		{"host", []string{"host"}},
		{"port", []string{"port"}},
		{"user", []string{"user", "username"}},
		{"password", []string{"password"}},
		{"dbname", []string{"database", "dbname"}},
		{"sslmode", []string{"sslmode"}},
	} {
		v, err := get(f.keys...)
		if err != nil {
			return "", err
		}
		switch {
		case v == "" && f.param == "host":
			return "", &Error{Kind: kind, Message: fmt.Sprintf(
				"credential %q has no host (and no url); store host, port, user, password and database in it", name)}
		case v == "" && f.param == "port":
			v = pgDefaultPort
		case v == "":
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.param + "=" + dsnQuote(v))
	}
	return b.String(), nil
}

// dsnQuote quotes a value for a libpq key=value connection string.
func dsnQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
