package tools

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

const (
	// DefaultDuckDBTimeout bounds attaching and running the query.
	DefaultDuckDBTimeout = 300 * time.Second
	// duckdbMemory is the default database: a fresh in-memory one per run.
	duckdbMemory = ":memory:"
)

var duckdbKeys = []string{"database", "query", "command", "attach", "timeout", "auth", "gcs_credential"}

// duckdbTool runs "query" (or its alias "command") in DuckDB: by default a
// fresh in-memory database, or a "database" file that persists between runs
// (DuckDB options may follow the path, as in "x.duckdb?access_mode=read_only").
//
// The query may hold several statements separated by ';'; they run in order
// (each committing on its own, unless the query has BEGIN/COMMIT), and the
// result is the same shape the postgres tool returns: {"rows", "row_count",
// "columns", "rows_affected"}, with rows and columns from the last statement
// that returns rows. A later step reads the rows as `{{ step.rows }}`
// (NoETL playbooks that read the step result itself as the row list need
// that one-word change).
//
// "attach" makes other databases visible to the query, as a list of
// {path, alias, read_only} (a DuckDB, SQLite, ... file) or {postgres, alias,
// read_only} where postgres is a credential name or a connection URL. The
// latter needs DuckDB's postgres extension already installed on the worker:
// the tool never downloads extensions.
//
// "auth" (NoETL's) creates DuckDB secrets from stored credentials before the
// query runs, so a query can attach postgres with (TYPE postgres, SECRET name) or read
// gs:// and s3:// paths: postgres, GCS HMAC and S3 secrets (duckdbauth.go).
// They need DuckDB's postgres or httpfs extension installed on the worker.
type duckdbTool struct{}

// duckdbAttachment is one validated entry of "attach".
type duckdbAttachment struct {
	path, postgres, alias string
	readOnly              bool
}

func (duckdbTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	stmts, err := duckdbStatements(cfg)
	if err != nil {
		return nil, err
	}
	database, err := optString(cfg, "duckdb", "database", duckdbMemory)
	if err != nil {
		return nil, err
	}
	if database == "" {
		database = duckdbMemory
	}
	attach, err := duckdbAttachments(cfg)
	if err != nil {
		return nil, err
	}
	timeout, err := optSeconds(cfg, "duckdb", "timeout", DefaultDuckDBTimeout)
	if err != nil {
		return nil, err
	}
	secrets, err := duckdbSecrets(ctx, cfg)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(stage string, err error) error {
		switch {
		case ctx.Err() != nil:
			return &Error{Kind: ErrorKindCanceled, Retryable: true,
				Message: fmt.Sprintf("duckdb: %s was stopped because the worker canceled it: %v", stage, context.Cause(ctx))}
		case runCtx.Err() != nil:
			return &Error{Kind: "duckdb", Retryable: true,
				Message: fmt.Sprintf("%s timed out after %s; raise timeout if the query is expected to be slow", stage, timeout)}
		}
		var te *Error
		if errors.As(err, &te) {
			return te
		}
		return &Error{Kind: "duckdb", Message: fmt.Sprintf("%s: %v", stage, err)}
	}

	res, stage, err := duckdbExec(runCtx, database, secrets, attach, stmts)
	if err != nil {
		return nil, fail(stage, err)
	}
	return res.toMap(), nil
}

// duckdbStatements returns the statements of "query" or its alias
// "command": SQL text, or a list of SQL strings run in order.
func duckdbStatements(cfg map[string]any) ([]string, error) {
	key := "query"
	if _, ok := cfg["command"]; ok {
		if _, both := cfg["query"]; both {
			return nil, configError("duckdb", "command", "is an alias of query; give only one of them")
		}
		key = "command"
	}
	if cfg[key] == nil {
		key = "query"
	}
	scripts, err := sqlCommands(cfg, "duckdb", key)
	if err != nil {
		return nil, err
	}
	var stmts []string
	for _, s := range scripts {
		stmts = append(stmts, splitSQL(s)...)
	}
	if len(stmts) == 0 {
		return nil, configError("duckdb", key, "has no SQL statements, only blanks or comments")
	}
	return stmts, nil
}

func duckdbAttachments(cfg map[string]any) ([]duckdbAttachment, error) {
	v, ok := cfg["attach"]
	if !ok || v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, configError("duckdb", "attach", "must be a list of {path, alias} or {postgres, alias}, got %s", describe(v))
	}
	out := make([]duckdbAttachment, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, configError("duckdb", "attach", "entry %d must be a map like {path, alias} or {postgres, alias}, got %s", i+1, describe(item))
		}
		for k := range m {
			if !slices.Contains([]string{"path", "postgres", "alias", "read_only"}, k) {
				return nil, configError("duckdb", "attach", "entry %d has unknown key %q; allowed: path, postgres, alias, read_only", i+1, k)
			}
		}
		var a duckdbAttachment
		for key, dst := range map[string]*string{"path": &a.path, "postgres": &a.postgres, "alias": &a.alias} {
			if v, ok := m[key]; ok && v != nil {
				if *dst, ok = v.(string); !ok {
					return nil, configError("duckdb", "attach", "entry %d: %s must be a string, got %s", i+1, key, describe(v))
				}
			}
		}
		if ro, ok := m["read_only"]; ok && ro != nil {
			if a.readOnly, ok = ro.(bool); !ok {
				return nil, configError("duckdb", "attach", "entry %d: read_only must be true or false, got %s", i+1, describe(ro))
			}
		}
		switch {
		case (a.path == "") == (a.postgres == ""):
			return nil, configError("duckdb", "attach", "entry %d must have exactly one of path (a database file) or postgres (a credential name or URL)", i+1)
		case a.postgres != "" && a.alias == "":
			return nil, configError("duckdb", "attach", "entry %d: a postgres attachment needs an alias to query it by", i+1)
		}
		out = append(out, a)
	}
	return out, nil
}

func (a duckdbAttachment) describe() string {
	if a.path != "" {
		return fmt.Sprintf("file %q", a.path)
	}
	return fmt.Sprintf("postgres as %q", a.alias) // the URL may hold a password
}

// sqlString quotes s as a SQL string literal.
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// sqlIdent quotes s as a SQL identifier.
func sqlIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// splitSQL splits a script into statements at top-level semicolons,
// skipping those inside quotes ('...', E'...', "..."), dollar quotes
// ($tag$...$tag$) and comments (--, nested /* */). Statements holding only
// blanks and comments are dropped. A mistake here cannot change what runs
// silently: DuckDB parses every piece and rejects a broken one.
func splitSQL(script string) []string {
	var out []string
	start, hasCode := 0, false
	flush := func(end int) {
		if hasCode && strings.TrimSpace(script[start:end]) != "" {
			out = append(out, strings.TrimSpace(script[start:end]))
		}
		start, hasCode = end+1, false
	}
	for i := 0; i < len(script); i++ {
		c := script[i]
		switch {
		case c == ';':
			flush(i)
			continue
		case c == '-' && strings.HasPrefix(script[i:], "--"):
			if j := strings.IndexByte(script[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(script)
			}
			continue
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			depth := 0
			for ; i < len(script); i++ {
				if strings.HasPrefix(script[i:], "/*") {
					depth++
					i++
				} else if strings.HasPrefix(script[i:], "*/") {
					depth--
					i++
					if depth == 0 {
						break
					}
				}
			}
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			continue
		}
		hasCode = true
		switch {
		case c == '\'' || c == '"':
			// E'...' strings also allow backslash escapes.
			backslash := c == '\'' && i > 0 && (script[i-1] == 'e' || script[i-1] == 'E') &&
				(i == 1 || !isIdentByte(script[i-2]))
			for i++; i < len(script); i++ {
				if backslash && script[i] == '\\' {
					i++
				} else if script[i] == c {
					if i+1 < len(script) && script[i+1] == c {
						i++ // doubled quote
					} else {
						break
					}
				}
			}
		case c == '$' && (i == 0 || !isIdentByte(script[i-1])):
			if tag := dollarTag(script[i:]); tag != "" {
				if j := strings.Index(script[i+len(tag):], tag); j >= 0 {
					i += len(tag) + j + len(tag) - 1
				} else {
					i = len(script)
				}
			}
		}
	}
	flush(len(script))
	return out
}

// dollarTag returns the opening "$tag$" or "$$" at the start of s, or "".
// "$1" is a parameter, not a tag.
func dollarTag(s string) string {
	for j := 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '$':
			return s[:j+1]
		case c >= '0' && c <= '9':
			if j == 1 {
				return ""
			}
		case !isIdentByte(c):
			return ""
		}
	}
	return ""
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}
