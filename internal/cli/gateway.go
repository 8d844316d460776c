package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// gatewayCmd is `millrace gateway` (issue 12).
func gatewayCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gateway",
		Short: "Run the gateway: browser logins, an authenticated proxy to the server, live updates (SSE), webhooks",
		RunE:  func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
