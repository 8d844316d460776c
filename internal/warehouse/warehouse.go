// Package warehouse runs SQL against a project's data warehouse and streams
// the result as JSON-friendly rows. Each warehouse is one file that calls
// Register from init; callers only see Conn, Open and Driver.
package warehouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Portable column types. Every driver maps its native types onto these so
// clients can format values without knowing the warehouse.
const (
	TypeString    = "string"
	TypeNumber    = "number"
	TypeInteger   = "integer"
	TypeBoolean   = "boolean"
	TypeTimestamp = "timestamp"
	TypeDate      = "date"
	TypeJSON      = "json"
	TypeBytes     = "bytes"
)

// Column describes one result column.
type Column struct {
	Name string `json:"name"`
	// Type is one of the portable Type* names.
	Type string `json:"type"`
	// NativeType is the warehouse's own name for the type, e.g. "numeric" or
	// "DECIMAL(18,3)", for clients that want more detail.
	NativeType string `json:"nativeType,omitempty"`
}

// ResultHeader is the first line of a result stream, the NDJSON a
// warehouse worker uploads and the server ingests: this header, then one
// JSON array per row in the columns' order.
type ResultHeader struct {
	Columns []Column `json:"columns"`
}

// Conn is a project's warehouse connection.
type Conn struct {
	// Type selects the driver: "postgres" or "duckdb" (see Types).
	Type string `json:"type"`
	// URL is driver specific: postgres://user:pass@host:port/db?... for
	// PostgreSQL; a file path or ":memory:" for DuckDB.
	URL string `json:"url"`
}

// Driver runs queries against one warehouse connection. It is safe for
// concurrent use.
type Driver interface {
	// Query runs sql and calls onColumns once, then onRow for every row. Row
	// values are JSON-friendly: int64, float64, string, bool, nil, decoded
	// JSON, timestamps as RFC 3339 strings, bytes as base64 strings and
	// decimals as strings when float64 cannot hold them exactly. The row
	// slice is only valid during the call.
	//
	// Cancelling ctx stops the query in the warehouse and returns an error
	// matching ctx.Err(). A failure reported by the warehouse is an *Error;
	// an error from onColumns or onRow is returned as is.
	Query(ctx context.Context, sql string, onColumns func([]Column) error, onRow func([]any) error) error
	// Close releases the driver's connections.
	Close() error
}

// Error is a failure reported by the warehouse (or on the way to it).
type Error struct {
	// Message is the warehouse's own message, e.g.
	// `relation "nope" does not exist`, for showing to the user.
	Message string
	// Code is the warehouse's error code where it has one (a PostgreSQL
	// SQLSTATE such as "42P01").
	Code string
	// Retryable says the same query may succeed if run again: the
	// connection failed, or the warehouse reported a transient conflict.
	Retryable bool
}

func (e *Error) Error() string { return e.Message }

// OpenFunc connects to a warehouse of one type.
type OpenFunc func(ctx context.Context, c Conn) (Driver, error)

// ValidateFunc checks a connection's URL without connecting.
type ValidateFunc func(c Conn) error

type registration struct {
	open     OpenFunc
	validate ValidateFunc
}

var (
	registryMu sync.RWMutex
	registry   = map[string]registration{}
)

// Register makes a warehouse type available to Open. It panics when typ is
// registered twice, as that is a programming error.
func Register(typ string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[typ]; dup {
		panic("warehouse: type " + typ + " registered twice")
	}
	registry[typ] = registration{open: open, validate: registry[typ].validate}
}

// RegisterValidator adds the cheap URL check Validate runs for typ.
// Without one, Validate only requires a non-empty URL.
func RegisterValidator(typ string, validate ValidateFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	r := registry[typ]
	r.validate = validate
	registry[typ] = r
}

// Types lists the registered warehouse types, sorted.
func Types() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var types []string
	for t, r := range registry {
		if r.open != nil {
			types = append(types, t)
		}
	}
	slices.Sort(types)
	return types
}

func lookup(typ string) (registration, error) {
	registryMu.RLock()
	r, ok := registry[typ]
	registryMu.RUnlock()
	if !ok || r.open == nil {
		return registration{}, fmt.Errorf("unknown warehouse type %q: use one of %s", typ, strings.Join(Types(), ", "))
	}
	return r, nil
}

// Validate checks c without connecting: the type is known and the URL has
// the shape its driver expects. Use it when a project is created.
func Validate(c Conn) error {
	r, err := lookup(c.Type)
	if err != nil {
		return err
	}
	if strings.TrimSpace(c.URL) == "" {
		return fmt.Errorf("the %s warehouse url is empty: give the connection url", c.Type)
	}
	if r.validate != nil {
		return r.validate(c)
	}
	return nil
}

// Open validates c and opens a driver for it. The caller must Close it.
func Open(ctx context.Context, c Conn) (Driver, error) {
	if err := Validate(c); err != nil {
		return nil, err
	}
	r, _ := lookup(c.Type)
	return r.open(ctx, c)
}
