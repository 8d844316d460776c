package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// executionFailCmd is `millrace executions fail ID --reason TEXT`.
func executionFailCmd() *cobra.Command {
	var cf clientFlags
	var reason string
	cmd := &cobra.Command{
		Use:   "fail ID --reason TEXT",
		Short: "Fail a running execution stuck on a repeating server error (its commands are cancelled)",
		Long: `Fail a running execution: it ends failed with a playbook.failed event that
carries the reason, and its live commands are cancelled (their workers get 409
on their next report). For an execution the server cannot advance, say one
stuck on a step whose report fails every time; see docs/operations.md#verify.
An execution that already ended is a 409 state_conflict.`,
		Example: `  millrace executions fail 7261839542874112 --reason "report fails with 500 since the upgrade; INC-42"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			if reason == "" {
				return errors.New("--reason is required: say why the execution is failed (it is kept in its playbook.failed event)")
			}
			ex, err := cf.client().Fail(cmd.Context(), id, reason)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), ex)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "execution %d %s: %s\n", ex.ExecutionID, ex.Status, ex.Error)
			return nil
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "Why the execution is failed (required; kept in its playbook.failed event)")
	return cmd
}
