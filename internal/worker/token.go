package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
)

// tokenCheckTimeout bounds the start-up identity check.
const tokenCheckTimeout = 10 * time.Second

// CheckToken asks the server at serverURL who token (MILLRACE_WORKER_TOKEN)
// speaks for, so that a worker with a missing, bad or wrong-role token
// fails at start with what to do, not at its first claim. A server that
// cannot be reached yet is not an error (workers may start first): the
// check is then skipped with a warning.
func CheckToken(ctx context.Context, serverURL, token string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, tokenCheckTimeout)
	defer cancel()
	c := client.New(serverURL).WithToken(token)
	defer c.HTTP.CloseIdleConnections()
	who, err := c.WhoAmI(ctx)
	const makeOne = "make one with: millrace token create --role worker"
	switch st := client.StatusOf(err); {
	case err == nil:
	case st == http.StatusUnauthorized && token == "":
		return fmt.Errorf("the server at %s needs a token: set MILLRACE_WORKER_TOKEN (or --token) to a token of role worker; %s", serverURL, makeOne)
	case st == http.StatusUnauthorized:
		return fmt.Errorf("MILLRACE_WORKER_TOKEN is not accepted by the server at %s (unknown, expired or revoked): %s", serverURL, makeOne)
	default:
		log.Warn("cannot check MILLRACE_WORKER_TOKEN with the server now; starting anyway", "server", serverURL, "err", err)
		return nil
	}
	switch {
	case who.AuthDisabled:
		if token != "" {
			log.Info("the server runs with MILLRACE_AUTH=none: MILLRACE_WORKER_TOKEN is not needed", "server", serverURL)
		}
	case who.Role != api.RoleWorker:
		return fmt.Errorf("MILLRACE_WORKER_TOKEN is a token of role %s (token id %d); workers need one of role worker: %s", who.Role, who.TokenID, makeOne)
	default:
		log.Info("worker token accepted", "server", serverURL, "token_id", who.TokenID, "name", who.User.DisplayName)
	}
	return nil
}
