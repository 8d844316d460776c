package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func credentialResealCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "reseal",
		Short: "Seal every credential and project connection again under MILLRACE_SECRET_KEY (after a key rotation)",
		Long: `After a rotation (the old key moved to MILLRACE_SECRET_KEYS, a new
MILLRACE_SECRET_KEY set on every server), seal every stored credential and
warehouse project connection again under the new key, so the old key can be
removed from MILLRACE_SECRET_KEYS. Safe to repeat; values already under the
new key are left alone. See docs/security.md#key-rotation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := cf.client().CredentialReseal(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "sealed under key %s: %d of %d credentials, %d of %d project connections changed\n",
				out.KeyID, out.Credentials.Resealed, out.Credentials.Checked, out.Projects.Resealed, out.Projects.Checked)
			failed := append(append([]string{}, out.Credentials.Failed...), out.Projects.Failed...)
			if len(failed) > 0 {
				return fmt.Errorf("%d values open under no key of the ring and kept their old sealing: %s; add the key they were sealed under to MILLRACE_SECRET_KEYS and run reseal again, or store them again",
					len(failed), strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}
