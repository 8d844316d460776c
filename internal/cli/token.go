package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// tokenCmd is `millrace token create|list|revoke` (issue 12).
func tokenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "Make, list and revoke API tokens",
		RunE:  func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
