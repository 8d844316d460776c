package warehouse

import (
	"errors"
	"strings"
)

const (
	// TypeDuckDB is the Conn.Type of DuckDB warehouses.
	TypeDuckDB = "duckdb"
	// DuckDBMemory is the URL of a private in-memory database, which lives
	// as long as its Driver.
	DuckDBMemory = ":memory:"
)

func init() {
	Register(TypeDuckDB, openDuckDB)
	RegisterValidator(TypeDuckDB, validateDuckDB)
}

// validateDuckDB accepts ":memory:" or a file path, optionally followed by
// DuckDB options ("analytics.duckdb?access_mode=read_only").
func validateDuckDB(c Conn) error {
	if strings.ContainsRune(c.URL, 0) {
		return errors.New("the duckdb warehouse url contains a NUL byte: give a file path, or " + DuckDBMemory + " for a database in memory")
	}
	if strings.Contains(c.URL, "://") {
		return errors.New("the duckdb warehouse url is a file path (e.g. /data/analytics.duckdb) or " + DuckDBMemory + ", not a URL with a scheme")
	}
	return nil
}
