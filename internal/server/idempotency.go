package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/store"
)

// The Idempotency-Key of a submit (POST /api/execute, a query submit): the
// key commits in the transaction that makes the execution or query (flow
// and query record it, store.IdemRequest), so a retry of a submit whose
// answer was lost returns the first one instead of making a second.
const (
	IdempotencyHeader = "Idempotency-Key"
	// ReplayedHeader marks an answer sent again for a repeated key.
	ReplayedHeader = "Idempotent-Replayed"
	maxIdemKey     = 255
	// Expired keys are deleted every idemPurgeInterval, idemPurgeBatch
	// per transaction; a submit already treats them as absent.
	idemPurgeInterval = 10 * time.Minute
	idemPurgeBatch    = 1000
)

// WithIdempotencyTTL sets how long a key is remembered
// (MILLRACE_IDEMPOTENCY_SECONDS; config.DefaultIdempotencyTTL if not given).
func WithIdempotencyTTL(d time.Duration) Option {
	return func(a *API) { a.idemTTL = d }
}

// idempotent reads the request's Idempotency-Key and returns the context
// to submit with, carrying it (r's own when there is none). asked is what
// the submit asks (its decoded body and whatever else decides the answer):
// a retry must ask the same.
func (a *API) idempotent(r *http.Request, scope string, asked any) (context.Context, *store.IdemRequest, error) {
	key, ok, err := idempotencyKey(r)
	if err != nil || !ok {
		return r.Context(), nil, err
	}
	b, err := json.Marshal(asked) // map keys sorted: the same request hashes the same
	if err != nil {
		return nil, nil, err
	}
	h := sha256.New()
	h.Write([]byte(r.Method + " " + r.URL.Path + "\n"))
	h.Write(b)
	ir := &store.IdemRequest{Scope: scope, Key: key, Hash: hex.EncodeToString(h.Sum(nil)), TTL: a.idemTTL}
	return store.WithIdempotency(r.Context(), ir), ir, nil
}

// idempotencyKey validates the header: 1 to 255 printable ASCII characters.
func idempotencyKey(r *http.Request) (string, bool, error) {
	vals := r.Header.Values(IdempotencyHeader)
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", false, apierr.New(apierr.BadRequest, "send one %s header, not %d", IdempotencyHeader, len(vals))
	}
	key := vals[0]
	if key == "" || len(key) > maxIdemKey {
		return "", false, apierr.New(apierr.BadRequest, "%s must be 1 to %d characters, got %d; a UUID is a good key", IdempotencyHeader, maxIdemKey, len(key))
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return "", false, apierr.New(apierr.BadRequest, "%s must be printable ASCII; byte %d is 0x%02x; a UUID is a good key", IdempotencyHeader, i, c)
		}
	}
	return key, true, nil
}

// replayed answers a submit whose key was already recorded (err is
// store.ErrIdempotencyTaken): the first answer again, marked with
// Idempotent-Replayed, when the request is the same; 422 when the key was
// first used with another request. ok false: err is not about the key.
func (a *API) replayed(w http.ResponseWriter, r *http.Request, ir *store.IdemRequest, err error) (any, bool, error) {
	if ir == nil || !errors.Is(err, store.ErrIdempotencyTaken) {
		return nil, false, err
	}
	k, err := store.ReadValue(r.Context(), a.st, func(q store.Querier) (store.IdempotencyKey, error) {
		return q.IdempotencyGet(r.Context(), ir.Scope, ir.Key)
	})
	if errors.Is(err, store.ErrNotFound) {
		// Purged between the conflict and this read: expired, so nothing
		// holds the key now.
		return nil, true, apierr.New(apierr.StateConflict, "%s %q expired while this submit ran; send it again", IdempotencyHeader, ir.Key)
	}
	if err != nil {
		return nil, true, err
	}
	if k.RequestHash != ir.Hash {
		return nil, true, apierr.New(apierr.IdempotencyMismatch, "%s %q was first used at %s with another request than this %s %s (it made %s); use a new key for a new request",
			IdempotencyHeader, ir.Key, k.CreatedAt.Format(time.RFC3339), r.Method, r.URL.Path, k.ResultID)
	}
	mIdemReplays.WithLabelValues(ir.Scope).Inc()
	w.Header().Set(ReplayedHeader, "true")
	return json.RawMessage(k.Answer), true, nil
}

// PurgeIdempotencyKeys deletes the keys created before before,
// idemPurgeBatch per transaction until none is left, and returns how many.
func PurgeIdempotencyKeys(ctx context.Context, st *store.Store, before time.Time) (int, error) {
	total := 0
	for {
		var n int
		err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			var err error
			n, err = tx.IdempotencyPurge(ctx, before, idemPurgeBatch)
			return err
		})
		total += n
		if err != nil || n < idemPurgeBatch {
			return total, err
		}
	}
}

// purgeIdempotencyKeys runs PurgeIdempotencyKeys at start and then every
// idemPurgeInterval until ctx ends.
func (s *Server) purgeIdempotencyKeys(ctx context.Context, ttl time.Duration) {
	t := time.NewTicker(idemPurgeInterval)
	defer t.Stop()
	for {
		n, err := PurgeIdempotencyKeys(ctx, s.st, time.Now().Add(-ttl))
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("purging expired idempotency keys; retrying at the next interval", "error", err, "interval", idemPurgeInterval)
		case n > 0:
			s.log.Info("purged expired idempotency keys", "deleted", n, "ttl", ttl)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

var mIdemReplays = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "millrace_idempotent_replays_total",
	Help: "Submits answered again from their Idempotency-Key (a retry of a submit already made), by scope (execution, query).",
}, []string{"scope"})
