package server_test

import (
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
)

func hexKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k)
}

// TestKeyRotation is docs/security.md#key-rotation step by step, three
// servers on one SQLite file: the old key seals; the new key with the old
// one in MILLRACE_SECRET_KEYS opens both and reseals; the new key alone
// then opens everything.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	db := "sqlite:" + filepath.Join(t.TempDir(), "m.db")
	oldKey, newKey := hexKey(t), hexKey(t)
	withKeys := func(seal, older string) func(*config.Server) {
		return func(c *config.Server) { c.DatabaseURL, c.SecretKey, c.SecretKeys = db, seal, older }
	}
	ctx := t.Context()

	before := servertest.Start(t, withKeys(oldKey, ""))
	if _, err := before.API.CredentialPut(ctx, api.Credential{Name: "pg_main", Kind: "postgres", Data: map[string]any{"password": "s3cret-old"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := before.API.ProjectPut(ctx, "wh", api.WarehouseConn{Type: "duckdb", URL: filepath.Join(t.TempDir(), "w.duckdb")}); err != nil {
		t.Fatal(err)
	}

	during := servertest.Start(t, withKeys(newKey, oldKey))
	got, err := during.API.CredentialGet(ctx, "pg_main", true)
	if err != nil || got.Data["password"] != "s3cret-old" {
		t.Fatalf("the new server opens a credential sealed under the older key: %v, %v", got.Data, err)
	}
	// A write seals under the new key at once.
	if _, err := during.API.CredentialPut(ctx, api.Credential{Name: "api", Kind: "http", Data: map[string]any{"token": "t0k"}}); err != nil {
		t.Fatal(err)
	}
	newBox, _ := secret.New(newKey)
	if !newBox.Current(storedCredential(t, during, "api").Data) {
		t.Fatal("a credential written after the rotation is not sealed under MILLRACE_SECRET_KEY")
	}
	if newBox.Current(storedCredential(t, during, "pg_main").Data) {
		t.Fatal("pg_main was resealed before anyone asked")
	}
	rep, err := during.API.CredentialReseal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.KeyID != newBox.KeyID() || rep.Credentials.Checked != 2 || rep.Credentials.Resealed != 1 ||
		rep.Projects.Checked != 1 || rep.Projects.Resealed != 1 || len(rep.Credentials.Failed)+len(rep.Projects.Failed) != 0 {
		t.Fatalf("reseal report %+v", rep)
	}
	if rep, err = during.API.CredentialReseal(ctx); err != nil || rep.Credentials.Resealed+rep.Projects.Resealed != 0 {
		t.Fatalf("a second reseal changed something: %+v, %v", rep, err)
	}

	after := servertest.Start(t, withKeys(newKey, ""))
	if got, err := after.API.CredentialGet(ctx, "pg_main", true); err != nil || got.Data["password"] != "s3cret-old" {
		t.Fatalf("the new key alone opens the resealed credential: %v, %v", got.Data, err)
	}
	p, err := store.ReadValue(ctx, after.Srv.Store(), func(q store.Querier) (store.Project, error) { return q.ProjectGet(ctx, "wh") })
	if err != nil || !newBox.Current(p.Warehouse) {
		t.Fatalf("the project's connection is not under the new key: %v", err)
	}
	// The old key alone no longer opens what was resealed, and says why.
	stale := servertest.Start(t, withKeys(oldKey, ""))
	_, err = stale.API.CredentialGet(ctx, "pg_main", true)
	if err == nil || !strings.Contains(err.Error(), "credential_unreadable") && !strings.Contains(err.Error(), "another MILLRACE_SECRET_KEY") {
		t.Fatalf("old key alone: err = %v, want credential_unreadable", err)
	}
}

func TestSecretKeysWithoutSecretKey(t *testing.T) {
	t.Parallel()
	cfg := servertest.Config(t)
	cfg.SecretKey, cfg.SecretKeys = "", hexKey(t)
	_, err := server.New(t.Context(), cfg, discardLog())
	if err == nil || !strings.Contains(err.Error(), "MILLRACE_SECRET_KEYS is set but MILLRACE_SECRET_KEY is not") {
		t.Fatalf("err = %v", err)
	}
}

func storedCredential(t *testing.T, h *servertest.Harness, name string) store.Credential {
	t.Helper()
	c, err := store.ReadValue(t.Context(), h.Srv.Store(), func(q store.Querier) (store.Credential, error) {
		return q.CredentialGet(t.Context(), name)
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
