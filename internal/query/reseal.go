package query

import (
	"context"
	"errors"

	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/store"
)

// ResealProjects seals every project's connection again under the sealing
// key (after a key rotation), each read and rewritten in one transaction
// so a concurrent PutProject is never overwritten with older data. It
// returns how many it checked and changed, and the names no key opens.
func (s *Service) ResealProjects(ctx context.Context) (checked, resealed int, failed []string, err error) {
	if s.box == nil {
		return 0, 0, nil, errorf(ErrSecretKeyMissing, "MILLRACE_SECRET_KEY is not set, so project connections cannot be sealed again")
	}
	list, err := s.Projects(ctx)
	if err != nil {
		return 0, 0, nil, err
	}
	for _, meta := range list {
		changed := false
		err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			p, err := tx.ProjectGet(ctx, meta.Name)
			if err != nil {
				return err
			}
			out, ch, err := s.box.Reseal(p.Warehouse, []byte("project:"+p.Name))
			if err != nil || !ch {
				changed = false
				return err
			}
			// UpdatedAt is kept: the connection did not change, so neither
			// does the results cache keyed on it.
			p.Warehouse = out
			_, err = tx.ProjectPut(ctx, p)
			changed = err == nil
			return err
		})
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue // deleted meanwhile
		case errors.Is(err, secret.ErrWrongKey) || errors.Is(err, secret.ErrCorrupt):
			failed = append(failed, meta.Name)
		case err != nil:
			return checked, resealed, failed, err
		}
		checked++
		if changed {
			resealed++
		}
	}
	return checked, resealed, failed, nil
}
