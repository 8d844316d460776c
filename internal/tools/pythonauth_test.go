package tools

import (
	"errors"
	"os"
	"testing"
)

// NoETL's python auth hands credentials to the code as the environment
// variables cloud SDKs read; the service account file is gone after the run.
func TestPythonAuthEnv(t *testing.T) {
	t.Parallel()
	ctx := WithEnv(t.Context(), credEnv{
		"sa":   {"type": "service_account", "project_id": "p1", "private_key": "k"},
		"hmac": {"access_key_id": "AK", "secret_access_key": "SK", "region": "auto"},
		"pg":   {"type": "postgres", "host": "h"},
	})
	res, err := Run(ctx, map[string]any{"kind": "python",
		"auth": map[string]any{
			"gcs": map[string]any{"service": "gcs_service_account", "source": "credential", "tool": "service_account", "key": "sa"},
			"s3":  map[string]any{"tool": "gcs_hmac", "key": "hmac"},
		},
		"env": map[string]any{"AWS_DEFAULT_REGION": "mine"},
		"code": `import json, os
path = os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
result = {"path": path, "sa": json.load(open(path))["project_id"], "id": os.environ["AWS_ACCESS_KEY_ID"],
          "secret": os.environ["AWS_SECRET_ACCESS_KEY"], "region": os.environ["AWS_DEFAULT_REGION"]}`})
	if err != nil {
		t.Fatal(err)
	}
	m := res.(map[string]any)
	if m["sa"] != "p1" || m["id"] != "AK" || m["secret"] != "SK" || m["region"] != "mine" {
		t.Errorf("result = %v; want the credentials in the environment, the tool's own env winning", m)
	}
	if _, err := os.Stat(m["path"].(string)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("service account file %s still exists after the run (%v)", m["path"], err)
	}
	_, err = Run(ctx, map[string]any{"kind": "python", "auth": "pg", "code": "result = 1"})
	var te *Error
	if !errors.As(err, &te) || te.Kind != ErrorKindConfig {
		t.Errorf("a postgres credential as python auth: err = %v, want a config error", err)
	}
}
