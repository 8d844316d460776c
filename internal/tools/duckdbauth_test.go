package tools

import (
	"errors"
	"strings"
	"testing"
)

// NoETL's duckdb auth becomes DuckDB secrets built from stored credentials:
// postgres, GCS HMAC (NoETL's hmac) and S3.
func TestDuckDBAuthSecrets(t *testing.T) {
	t.Parallel()
	env := credEnv{
		"pg":   {"host": "127.0.0.1", "port": 5432, "dbname": "demo", "user": "noetl", "password": "it's"},
		"hmac": {"key_id": "GOOG1", "secret": "s3cr3t"},
		"aws":  {"type": "s3", "access_key_id": "AK", "secret_access_key": "SK", "region": "eu-west-1"},
		"sa":   {"type": "service_account", "private_key": "x"},
	}
	ctx := WithEnv(t.Context(), env)
	got, err := duckdbSecrets(ctx, map[string]any{
		"auth": map[string]any{
			"pg_db":      map[string]any{"source": "credential", "tool": "postgres", "key": "pg"},
			"gcs_secret": map[string]any{"source": "credential", "tool": "hmac", "key": "hmac", "scope": "gs://bucket"},
			"lake":       "aws",
		},
		"gcs_credential": "hmac", // already used by gcs_secret: no second secret
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`CREATE OR REPLACE TEMPORARY SECRET "gcs_secret" (TYPE gcs, KEY_ID 'GOOG1', SECRET 's3cr3t', SCOPE 'gs://bucket')`,
		`CREATE OR REPLACE TEMPORARY SECRET "lake" (TYPE s3, KEY_ID 'AK', SECRET 'SK', REGION 'eu-west-1')`,
		`CREATE OR REPLACE TEMPORARY SECRET "pg_db" (TYPE postgres, HOST '127.0.0.1', PORT '5432', DATABASE 'demo', USER 'noetl', PASSWORD 'it''s')`,
	}
	if len(got) != len(want) {
		t.Fatalf("secrets = %+v", got)
	}
	for i := range want {
		if got[i].stmt != want[i] {
			t.Errorf("secret %d = %s\nwant %s", i, got[i].stmt, want[i])
		}
	}
	if got, err := duckdbSecrets(ctx, map[string]any{"gcs_credential": "hmac"}); err != nil || len(got) != 1 || got[0].typ != "gcs" {
		t.Errorf("gcs_credential alone = %+v, %v; want one GCS secret", got, err)
	}

	for auth, msg := range map[string]any{
		"service account": map[string]any{"g": map[string]any{"tool": "service_account", "key": "sa"}},
		"other source":    map[string]any{"g": map[string]any{"source": "secret_manager", "key": "x"}},
		"no credential":   map[string]any{"g": map[string]any{"tool": "hmac"}},
		"missing fields":  map[string]any{"g": map[string]any{"tool": "postgres", "key": "hmac"}},
	} {
		_, err := duckdbSecrets(ctx, map[string]any{"auth": msg})
		var te *Error
		if !errors.As(err, &te) || te.Kind != ErrorKindConfig || strings.Contains(te.Message, "s3cr3t") {
			t.Errorf("%s: err = %v, want a config error that does not show the secret", auth, err)
		}
	}
}

// Running with auth needs the secret type's extension on the worker; without
// it the step fails saying which one, never showing the secret.
func TestDuckDBAuthRun(t *testing.T) {
	t.Parallel()
	ctx := WithEnv(t.Context(), credEnv{"hmac": {"key_id": "GOOG1", "secret": "s3cr3t"}})
	res, err := Run(ctx, map[string]any{"kind": "duckdb", "auth": map[string]any{"g": map[string]any{"tool": "hmac", "key": "hmac"}},
		"query": "SELECT name, type FROM duckdb_secrets()"})
	if err != nil {
		if !strings.Contains(err.Error(), `auth secret "g" (gcs) needs DuckDB's httpfs extension`) || strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("err = %v", err)
		}
		return
	}
	rows := res.(map[string]any)["rows"].([]any)
	if len(rows) != 1 || rows[0].(map[string]any)["name"] != "g" {
		t.Fatalf("secrets = %v, want g", rows)
	}
}
