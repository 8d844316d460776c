package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
)

// ReplayedHeader is set on an answer the server sent again for a repeated
// Idempotency-Key.
const ReplayedHeader = "Idempotent-Replayed"

type idemKeyCtx struct{}

// WithIdempotencyKey makes the submits made with ctx send key (the CLI's
// --idempotency-key: a rerun of a submit whose answer was lost). Without
// it, each submit sends a fresh key of its own.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idemKeyCtx{}, key)
}

// NewIdempotencyKey is a random key (a UUID, version 4).
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// idempotencyKey is ctx's key, or a fresh one.
func idempotencyKey(ctx context.Context) string {
	if k, ok := ctx.Value(idemKeyCtx{}).(string); ok && k != "" {
		return k
	}
	return NewIdempotencyKey()
}

// submit POSTs a submit (an execution, a query) with an Idempotency-Key:
// every retry of send carries the same key, so the server makes one
// execution or query however many attempts reach it.
func (c *Client) submit(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	h := http.Header{IdempotencyHeader: {idempotencyKey(ctx)}}
	return c.send(ctx, http.MethodPost, path, "application/json", h, bytes.NewReader(b), out)
}
