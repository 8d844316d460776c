package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/config"
)

// ConfigReference renders the settings table of docs/configuration.md.
func ConfigReference() string {
	var s config.Server
	var w config.Worker
	var d config.Dev
	var g config.Gateway
	var m config.Migrate
	return config.Markdown(map[string]*config.Set{
		"server":  config.ServerSet(&s),
		"worker":  config.WorkerSet(&w),
		"dev":     config.DevSet(&d),
		"gateway": config.GatewaySet(&g),
		"migrate": config.MigrateSet(&m),
	})
}

func configCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print every setting: environment variable, flag, default and meaning (Markdown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), ConfigReference())
			return err
		},
	}
}
