package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/store"
)

// resealRoutes: after a key rotation, seal every stored secret again under
// MILLRACE_SECRET_KEY so the older keys can leave MILLRACE_SECRET_KEYS.
func (a *API) resealRoutes() {
	a.route("POST /api/credentials/reseal", auth.Admins, a.reseal)
}

func (a *API) reseal(w http.ResponseWriter, r *http.Request) (any, error) {
	box, err := a.sealer()
	if err != nil {
		return nil, err
	}
	out := api.ResealReport{KeyID: box.KeyID()}
	if out.Credentials, err = a.resealCredentials(r.Context(), box); err != nil {
		return nil, err
	}
	if a.query != nil {
		c := &out.Projects
		if c.Checked, c.Resealed, c.Failed, err = a.query.ResealProjects(r.Context()); err != nil {
			return nil, err
		}
	}
	a.log.Info("secrets sealed again", "key_id", out.KeyID,
		"credentials", out.Credentials.Resealed, "projects", out.Projects.Resealed,
		"unreadable", len(out.Credentials.Failed)+len(out.Projects.Failed))
	return out, nil
}

// resealCredentials reads and rewrites each credential in one transaction,
// so a concurrent credentialPut is never overwritten with older data.
func (a *API) resealCredentials(ctx context.Context, box *secret.Box) (api.ResealCounts, error) {
	var c api.ResealCounts
	list, err := store.ReadValue(ctx, a.st, func(q store.Querier) ([]store.Credential, error) {
		return q.CredentialList(ctx)
	})
	if err != nil {
		return c, err
	}
	for _, meta := range list {
		changed := false
		err := a.st.Do(ctx, credKey(meta.Name), func(ctx context.Context, tx store.Tx) error {
			cr, err := tx.CredentialGet(ctx, meta.Name)
			if err != nil {
				return err
			}
			out, ch, err := box.Reseal(cr.Data, []byte(cr.Name))
			changed = false
			if err != nil || !ch {
				return err
			}
			cr.Data = out
			if err = tx.CredentialPut(ctx, cr); err == nil {
				changed = true
			}
			return err
		})
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue // deleted meanwhile
		case errors.Is(err, secret.ErrWrongKey) || errors.Is(err, secret.ErrCorrupt):
			a.log.Warn("credential cannot be sealed again: no key of the ring opens it", "name", meta.Name, "err", err)
			c.Failed = append(c.Failed, meta.Name)
		case err != nil:
			return c, err
		}
		c.Checked++
		if changed {
			c.Resealed++
		}
	}
	return c, nil
}
