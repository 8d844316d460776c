package server

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/store"
)

// Credential field limits.
const (
	maxCredentialKind        = 64
	maxCredentialDescription = 1024
)

var credentialName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// Option configures an API.
type Option func(*API)

// WithSecretBox enables the credential API, sealing credential data with
// box. Without it (or with nil) the credential endpoints answer
// secret_key_missing and everything else works.
func WithSecretBox(box *secret.Box) Option { return func(a *API) { a.box = box } }

func (a *API) credentialRoutes() {
	a.route("POST /api/credentials", auth.Admins, a.credentialPut)
	a.route("GET /api/credentials", auth.Readers, a.credentialList)
	a.route("GET /api/credentials/{name}", auth.ReadersAndWorkers, a.credentialGet)
	a.route("DELETE /api/credentials/{name}", auth.Admins, a.credentialDelete)
}

// credentialView is the public shape of a credential. Data is present only
// when the caller asked for it with include_data=true.
type credentialView struct {
	Name        string          `json:"name"`
	Kind        string          `json:"kind"`
	Description string          `json:"description"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	Data        json.RawMessage `json:"data,omitempty"`
}

func credView(c store.Credential) credentialView {
	return credentialView{Name: c.Name, Kind: c.Kind, Description: c.Description, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// sealer returns the box, or the error that explains how to configure one.
func (a *API) sealer() (*secret.Box, error) {
	if a.box == nil {
		return nil, apierr.New(apierr.SecretKeyMissing,
			"this server has no %s, so it cannot store or read credentials; generate a key with `openssl rand -hex 32`, "+
				"set %s on every API server (the same key on each) and restart", secret.EnvKey, secret.EnvKey)
	}
	return a.box, nil
}

func checkName(name string) error {
	if !credentialName.MatchString(name) || name == "." || name == ".." {
		return apierr.New(apierr.BadRequest, "credential name %q is invalid: use 1 to 128 letters, digits, '_', '.' or '-'", name)
	}
	return nil
}

// credKey spreads credential writes over the store's commit shards.
func credKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64() >> 1)
}

func (a *API) credentialPut(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		Name        string          `json:"name"`
		Kind        string          `json:"kind"`
		Description string          `json:"description"`
		Data        json.RawMessage `json:"data"`
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	box, err := a.sealer()
	if err != nil {
		return nil, err
	}
	if err := checkName(body.Name); err != nil {
		return nil, err
	}
	if body.Kind == "" || len(body.Kind) > maxCredentialKind || !credentialName.MatchString(body.Kind) {
		return nil, apierr.New(apierr.BadRequest, "kind is required: up to %d letters, digits, '_', '.' or '-' (e.g. postgres, http, nats, generic)", maxCredentialKind)
	}
	if len(body.Description) > maxCredentialDescription {
		return nil, apierr.New(apierr.BadRequest, "description is longer than %d characters", maxCredentialDescription)
	}
	// The messages below never quote the data: it is the secret.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body.Data, &fields); err != nil || len(fields) == 0 {
		return nil, apierr.New(apierr.BadRequest, `data must be a non-empty JSON object of the credential's fields, e.g. {"user": "app", "password": "…"}`)
	}
	plain, err := json.Marshal(fields) // compact, keys sorted
	if err != nil {
		return nil, err
	}
	sealed, err := box.Seal(plain, []byte(body.Name))
	clear(plain)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	var out store.Credential
	err = a.st.Do(r.Context(), credKey(body.Name), func(ctx context.Context, tx store.Tx) error {
		c := store.Credential{Name: body.Name, Kind: body.Kind, Description: body.Description, Data: sealed, CreatedAt: now, UpdatedAt: now}
		if err := tx.CredentialPut(ctx, c); err != nil {
			return err
		}
		var err error
		out, err = tx.CredentialGet(ctx, body.Name)
		return err
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("credential stored", "name", out.Name, "kind", out.Kind)
	return credView(out), nil
}

func (a *API) credentialList(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := a.sealer(); err != nil {
		return nil, err
	}
	list, err := store.ReadValue(r.Context(), a.st, func(q store.Querier) ([]store.Credential, error) {
		return q.CredentialList(r.Context())
	})
	out := make([]credentialView, 0, len(list))
	for _, c := range list {
		out = append(out, credView(c))
	}
	return map[string]any{"credentials": out}, err
}

func (a *API) loadCredential(r *http.Request, name string) (store.Credential, error) {
	c, err := store.ReadValue(r.Context(), a.st, func(q store.Querier) (store.Credential, error) {
		return q.CredentialGet(r.Context(), name)
	})
	if errors.Is(err, store.ErrNotFound) {
		return c, apierr.New(apierr.CredentialNotFound, "credential %q does not exist; add it with `millrace credential add %s --kind KIND --set key=value`", name, name)
	}
	return c, err
}

func (a *API) credentialGet(w http.ResponseWriter, r *http.Request) (any, error) {
	box, err := a.sealer()
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	if err := checkName(name); err != nil {
		return nil, err
	}
	include := false
	if v := r.URL.Query().Get("include_data"); v != "" {
		if include, err = strconv.ParseBool(v); err != nil {
			return nil, apierr.New(apierr.BadRequest, "include_data must be true or false")
		}
	}
	// Workers resolve credentials for the steps they run; people manage
	// them but never read them back, whatever their role.
	if p := principal(r); include && !p.Open && p.Role != api.RoleWorker {
		return nil, apierr.New(apierr.Forbidden, "credential data is for role worker only; role %s may read credential %q without include_data (its name, kind and description)", p.Role, name)
	}
	c, err := a.loadCredential(r, name)
	if err != nil {
		return nil, err
	}
	v := credView(c)
	if !include {
		return v, nil
	}
	plain, err := box.Open(c.Data, []byte(c.Name))
	switch {
	case errors.Is(err, secret.ErrWrongKey):
		a.log.Warn("credential sealed with another key", "name", name, "err", err)
		return nil, apierr.New(apierr.CredentialUnreadable, "credential %q was sealed with another %s; start the server with the key it was stored under, or add the credential again",
			name, secret.EnvKey)
	case err != nil:
		a.log.Warn("credential cannot be opened", "name", name, "err", err)
		return nil, apierr.New(apierr.CredentialUnreadable, "credential %q cannot be decrypted: its stored data is corrupt or was altered; add the credential again", name)
	}
	v.Data = plain
	w.Header().Set("Cache-Control", "no-store")
	a.log.Debug("credential data read", "name", name, "remote", r.RemoteAddr)
	return v, nil
}

func (a *API) credentialDelete(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := a.sealer(); err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	if err := checkName(name); err != nil {
		return nil, err
	}
	err := a.st.Do(r.Context(), credKey(name), func(ctx context.Context, tx store.Tx) error {
		return tx.CredentialDelete(ctx, name)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.New(apierr.CredentialNotFound, "credential %q does not exist", name)
	}
	if err != nil {
		return nil, err
	}
	a.log.Info("credential deleted", "name", name)
	return map[string]string{"deleted": name}, nil
}
