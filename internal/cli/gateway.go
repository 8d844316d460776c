package cli

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/gateway"
)

// gatewayCmd is `millrace gateway` (issue 12).
func gatewayCmd() *cobra.Command {
	var cfg config.Gateway
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the gateway: browser logins, an authenticated proxy to the server, live updates (SSE), webhooks",
		Long: `Run a Millrace gateway: the edge browsers and webhooks talk to (NoETL's
gateway contract). It needs a Millrace server (SERVER_API_URL) and NATS
with JetStream; it has no database of its own.

  POST /api/auth/login     exchange an API token or an OIDC id_token for a
                           session (cookie millrace_session; the reply has it too)
  POST /api/auth/logout    revoke the session (every replica forgets it at once)
  /noetl/{path}            the server's /api/{path}, as the caller: the token
                           comes from Authorization: Bearer, X-Session-Token
                           or the cookie, and is checked here first
  GET  /api/executions/{id}/stream
                           an execution's events (SSE), resumable with
                           Last-Event-ID, read back from the server
  GET  /events             NoETL's JSON-RPC SSE channel (init, ping,
                           playbook/state, playbook/progress, playbook/result)
  POST /api/execute?wait=30s
                           start a playbook and answer with its result
  POST /api/internal/callback
                           a playbook's answer to a waiting request
  POST /ingress/{name}     webhooks signed with X-Millrace-Signature (HMAC)
  GET  /ui/                the web UI
  GET  /health, /metrics   no token needed

Sessions are cached in the NATS KV bucket NATS_SESSION_BUCKET for
NATS_SESSION_CACHE_TTL_SECS (the database holds the truth). Run as many
replicas as you like behind one load balancer: they share NATS and nothing
else. Browsers may call it from CORS_ALLOWED_ORIGINS only. Beside a running
` + "`millrace dev`" + ` (its dev.json under MILLRACE_DATA_DIR), the server and NATS
URLs default to that dev's. See docs/gateway.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cfg.Log, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if d, ok := findDev(); ok {
				// Beside `millrace dev`, the gateway finds it as the client
				// commands do, unless told otherwise.
				if !cmd.Flags().Changed("nats-url") && os.Getenv("NATS_URL") == "" && d.NATSURL != "" {
					cfg.NATS.URL = d.NATSURL
				}
				if !cmd.Flags().Changed("server-url") && os.Getenv("SERVER_API_URL") == "" && d.APIURL != "" {
					cfg.ServerURL = d.APIURL
				}
				log.Info("gateway: using the running millrace dev", "dev_file", filepath.Join(devDataDir(), devFileName), "server", cfg.ServerURL)
			}
			g, err := gateway.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			return g.Run(cmd.Context())
		},
	}
	bindSet(cmd, config.GatewaySet(&cfg))
	return cmd
}
