package tools

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// duckdbSecret is one DuckDB secret NoETL's `auth` asks for, built from a
// stored credential: CREATE TEMPORARY SECRET, so it lives as long as the
// run's connection and never reaches a persistent secret directory.
type duckdbSecret struct {
	name, typ string // typ: postgres, gcs or s3
	stmt      string // holds the secret; never put it in a message
}

// duckdbSecretTypes maps NoETL's auth `tool` (or `type`, `service`) to the
// DuckDB secret type. GCS HMAC keys are NoETL's hmac; service-account JSON
// and workload identity need Google's auth libraries, which DuckDB lacks.
var duckdbSecretTypes = map[string]string{
	"postgres": "postgres", "postgresql": "postgres",
	"hmac": "gcs", "gcs": "gcs", "gcs_hmac": "gcs",
	"s3": "s3", "aws": "s3", "r2": "s3",
}

var secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// duckdbSecrets reads NoETL's duckdb `auth`: a credential name (one secret
// of that name, its type taken from the credential's own type field), or a
// mapping secret name -> credential name or {source: credential, tool,
// key, scope}. gcs_credential (NoETL's shorthand for GCS access) adds a GCS
// HMAC secret unless auth already uses that credential.
func duckdbSecrets(ctx context.Context, cfg map[string]any) ([]duckdbSecret, error) {
	wants, err := parseAuth("duckdb", cfg["auth"])
	if err != nil {
		return nil, err
	}
	if g, ok := cfg["gcs_credential"]; ok && g != nil {
		name, ok := g.(string)
		if !ok || name == "" {
			return nil, configError("duckdb", "gcs_credential", "must be a credential name, got %s", describe(g))
		}
		if !slices.ContainsFunc(wants, func(w authEntry) bool { return w.cred == name }) {
			wants = append(wants, authEntry{name: "gcs_credential", tool: "hmac", cred: name})
		}
	}
	out := make([]duckdbSecret, 0, len(wants))
	for _, w := range wants {
		if !secretNameRE.MatchString(w.name) {
			return nil, configError("duckdb", "auth", "secret name %q must be letters, digits and _", w.name)
		}
		fields, err := credentialFields(ctx, "duckdb", w.cred)
		if err != nil {
			return nil, err
		}
		tool := w.tool
		if tool == "" {
			tool, _ = fields["type"].(string)
		}
		s, err := duckdbSecretStmt(w.name, tool, w.scope, fields)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// duckdbSecretStmt builds the CREATE SECRET for one credential's fields,
// accepting NoETL's field names.
func duckdbSecretStmt(name, tool, scope string, f map[string]any) (duckdbSecret, error) {
	typ, ok := duckdbSecretTypes[strings.ToLower(tool)]
	if !ok {
		return duckdbSecret{}, configError("duckdb", "auth", "secret %q: tool %q is not supported; Millrace creates postgres, GCS HMAC (hmac) and S3 secrets "+
			"(GCS service accounts and workload identity need Google's auth libraries, which DuckDB lacks: use HMAC keys)", name, tool)
	}
	get := func(keys ...string) string { return firstString(f, keys...) }
	parts := []string{"TYPE " + typ}
	add := func(opt, v string) { parts = append(parts, opt+" "+sqlString(v)) }
	var missing []string
	need := func(field, v string) {
		if v == "" {
			missing = append(missing, field)
		}
	}
	switch typ {
	case "postgres":
		host, db, user, pw := get("host", "db_host"), get("database", "dbname", "db_name"), get("user", "username", "db_user"), get("password", "db_password")
		need("host", host)
		need("database", db)
		need("user", user)
		add("HOST", host)
		if port := get("port", "db_port"); port != "" {
			add("PORT", port)
		}
		add("DATABASE", db)
		add("USER", user)
		if pw != "" {
			add("PASSWORD", pw)
		}
		if ssl := get("sslmode"); ssl != "" {
			add("SSLMODE", ssl)
		}
	default: // gcs, s3
		id, secret := get("key_id", "access_key_id", "hmac_key_id"), get("secret", "secret_key", "secret_access_key", "hmac_secret")
		need("key_id", id)
		need("secret", secret)
		add("KEY_ID", id)
		add("SECRET", secret)
		if typ == "s3" {
			if r := get("region"); r != "" {
				add("REGION", r)
			}
			if e := get("endpoint"); e != "" {
				add("ENDPOINT", e)
			}
		}
		if scope != "" {
			add("SCOPE", scope)
		}
	}
	if len(missing) > 0 {
		return duckdbSecret{}, configError("duckdb", "auth", "secret %q: the credential has no %s field for a %s secret", name, strings.Join(missing, ", "), typ)
	}
	return duckdbSecret{name: name, typ: typ,
		stmt: fmt.Sprintf("CREATE OR REPLACE TEMPORARY SECRET %s (%s)", sqlIdent(name), strings.Join(parts, ", "))}, nil
}
