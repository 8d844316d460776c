package cli

import (
	"context"
	"fmt"

	"github.com/millrace/millrace/internal/client"
)

// withSubmitKey makes the submit made with the returned context send *key,
// or a fresh key it stores in *key, so that a failure can name it.
func withSubmitKey(ctx context.Context, key *string) context.Context {
	if *key == "" {
		*key = client.NewIdempotencyKey()
	}
	return client.WithIdempotencyKey(ctx, *key)
}

// submitFailed adds to a submit's error the key to rerun it with when the
// submit may have been made all the same (the server was unreachable,
// overloaded or failed: the client's retries ran out).
func submitFailed(err error, key string) error {
	if !client.Temporary(err) {
		return err
	}
	return fmt.Errorf("%w\nthe submit may have started an execution: rerun with --idempotency-key %s to get that one instead of starting another", err, key)
}
