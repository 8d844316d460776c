package warehouse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/millrace/millrace/internal/sqlvalue"
)

const (
	// TypePostgres is the Conn.Type of PostgreSQL warehouses.
	TypePostgres = "postgres"

	// DefaultPostgresMaxConns sizes a driver's pool for one worker running
	// its default 100 queries at once. A pool_max_conns parameter in the
	// URL overrides it.
	DefaultPostgresMaxConns = 100
	// DefaultPostgresMaxConnIdle closes connections left idle this long, so
	// a burst of queries does not hold warehouse connections for ever.
	DefaultPostgresMaxConnIdle = 5 * time.Minute
	// PostgresApplicationName marks Millrace's sessions in pg_stat_activity
	// unless the URL sets its own application_name.
	PostgresApplicationName = "millrace"
	// postgresCancelDeadline is how long a cancelled query may take to stop
	// after the cancel request before the connection is dropped instead.
	postgresCancelDeadline = 5 * time.Second
)

func init() {
	Register(TypePostgres, openPostgres)
	RegisterValidator(TypePostgres, validatePostgres)
}

func validatePostgres(c Conn) error {
	if !strings.HasPrefix(c.URL, "postgres://") && !strings.HasPrefix(c.URL, "postgresql://") {
		return errors.New("the postgres warehouse url must look like postgres://user:password@host:5432/database?sslmode=require")
	}
	if _, err := pgxpool.ParseConfig(c.URL); err != nil {
		// pgx redacts the password from its parse errors.
		return fmt.Errorf("the postgres warehouse url does not parse: %w", err)
	}
	return nil
}

type postgresDriver struct {
	pool  *pgxpool.Pool
	where string // host:port/database, for errors
}

// openPostgres creates the pool without connecting: a warehouse that is
// down shows up as a retryable *Error on the first Query.
func openPostgres(_ context.Context, c Conn) (Driver, error) {
	cfg, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		return nil, fmt.Errorf("the postgres warehouse url does not parse: %w", err)
	}
	if !strings.Contains(c.URL, "pool_max_conns=") {
		cfg.MaxConns = DefaultPostgresMaxConns
	}
	if !strings.Contains(c.URL, "pool_max_conn_idle_time=") {
		cfg.MaxConnIdleTime = DefaultPostgresMaxConnIdle
	}
	cc := cfg.ConnConfig
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = PostgresApplicationName
	}
	// On cancel, ask the server to stop the query and wait for it to do so,
	// so the warehouse has stopped by the time Query returns and the
	// connection stays usable. (pgx's default closes the socket, which
	// leaves the backend running until it next writes.)
	cc.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: postgresCancelDeadline}
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("the postgres warehouse url is not usable: %w", err)
	}
	return &postgresDriver{pool: pool, where: fmt.Sprintf("%s:%d/%s", cc.Host, cc.Port, cc.Database)}, nil
}

func (d *postgresDriver) Close() error {
	d.pool.Close()
	return nil
}

func (d *postgresDriver) Query(ctx context.Context, sql string, onColumns func([]Column) error, onRow func([]any) error) error {
	// qctx also stops the query when a callback fails, rather than reading
	// the rest of a large result only to throw it away.
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := d.pool.Acquire(qctx)
	if err != nil {
		return d.fail(ctx, "connecting to "+d.where, err)
	}
	defer conn.Release()

	// The extended protocol with text results: one statement per query,
	// rows streamed off the socket one at a time, every value in a form
	// sqlvalue.FromPostgresText can convert exactly.
	rr := conn.Conn().PgConn().ExecParams(qctx, sql, nil, nil, nil, nil)
	fds := rr.FieldDescriptions()
	tm := conn.Conn().TypeMap()
	cols := make([]Column, len(fds))
	for i, fd := range fds {
		cols[i] = postgresColumn(tm, fd)
	}
	if fds != nil { // nil when the statement failed before describing rows
		if err := onColumns(cols); err != nil {
			cancel()
			rr.Close()
			return err
		}
	}
	row := make([]any, len(fds))
	for rr.NextRow() {
		raw := rr.Values()
		for i, fd := range fds {
			v, err := sqlvalue.FromPostgresText(tm, fd.DataTypeOID, raw[i])
			if err != nil {
				cancel()
				rr.Close()
				return fmt.Errorf("column %q: %w", fd.Name, err)
			}
			row[i] = v
		}
		if err := onRow(row); err != nil {
			cancel()
			rr.Close()
			return err
		}
	}
	if _, err := rr.Close(); err != nil {
		return d.fail(ctx, "running the query on "+d.where, err)
	}
	if fds == nil {
		// A statement without a result (DDL, INSERT without RETURNING).
		return onColumns([]Column{})
	}
	return nil
}

// postgresRetryable SQLSTATEs: the same query may well succeed next time.
var postgresRetryable = map[string]bool{
	"40001": true, // serialization_failure
	"40P01": true, // deadlock_detected
	"53300": true, // too_many_connections
	"57P01": true, // admin_shutdown
	"57P02": true, // crash_shutdown
	"57P03": true, // cannot_connect_now
}

// fail turns a pgx error into the caller's context error or an *Error.
func (d *postgresDriver) fail(ctx context.Context, stage string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("postgres: %s was stopped: %w", stage, ctx.Err())
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		msg := pgErr.Message
		if pgErr.Detail != "" {
			msg += "; detail: " + pgErr.Detail
		}
		if pgErr.Hint != "" {
			msg += "; hint: " + pgErr.Hint
		}
		return &Error{Message: msg, Code: pgErr.Code,
			Retryable: postgresRetryable[pgErr.Code] || strings.HasPrefix(pgErr.Code, "08")}
	}
	// Otherwise the network or the connection failed under us.
	var connErr *pgconn.ConnectError
	var netErr net.Error
	retryable := errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	return &Error{Message: fmt.Sprintf("%s: %v", stage, err), Retryable: retryable}
}

func postgresColumn(tm *pgtype.Map, fd pgconn.FieldDescription) Column {
	c := Column{Name: fd.Name, Type: TypeString}
	if t, ok := tm.TypeForOID(fd.DataTypeOID); ok {
		c.NativeType = t.Name
		if _, isArray := t.Codec.(*pgtype.ArrayCodec); isArray {
			c.Type = TypeJSON
		}
	} else {
		// Enums, domains and extension types arrive as text.
		c.NativeType = "oid " + strconv.FormatUint(uint64(fd.DataTypeOID), 10)
	}
	switch fd.DataTypeOID {
	case pgtype.BoolOID:
		c.Type = TypeBoolean
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		c.Type = TypeInteger
	case pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
		c.Type = TypeNumber
	case pgtype.TimestampOID, pgtype.TimestamptzOID:
		c.Type = TypeTimestamp
	case pgtype.DateOID:
		c.Type = TypeDate
	case pgtype.JSONOID, pgtype.JSONBOID:
		c.Type = TypeJSON
	case pgtype.ByteaOID:
		c.Type = TypeBytes
	}
	return c
}
