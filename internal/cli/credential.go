package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/millrace/millrace/internal/api"
)

func credentialCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "credential",
		Aliases: []string{"credentials"},
		Short:   "Add, list or delete credentials (secrets tools use through auth: NAME)",
		Long: `Credentials are named secrets (database logins, API tokens) that tools refer to
with auth: NAME. The server encrypts them at rest under MILLRACE_SECRET_KEY and
never shows their data in events, logs or these commands.`,
	}
	cmd.AddCommand(credentialAddCmd(), credentialListCmd(), credentialDeleteCmd(), credentialResealCmd())
	return cmd
}

func credentialAddCmd() *cobra.Command {
	var cf clientFlags
	var kind, description, data, fromFile string
	var sets []string
	cmd := &cobra.Command{
		Use:   "add NAME --kind KIND (--data JSON | --from-file FILE | --set key=value ...)",
		Short: "Create or replace a credential",
		Long: `Create or replace a credential. Its fields come from --data (a JSON object),
--from-file (a JSON or YAML object; - reads standard input), or --set key=value
pairs, which are kept as strings and override fields from the other two.
Prefer --from-file or --set over --data: a command line can end up in shell
history.`,
		Example: `  millrace credential add pg_main --kind postgres --from-file pg.yaml
  millrace credential add api_token --kind http --set token="$TOKEN" --description "partner API"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fields, err := credentialFields(cmd.InOrStdin(), data, fromFile, sets)
			if err != nil {
				return err
			}
			out, err := cf.client().CredentialPut(cmd.Context(), api.Credential{Name: args[0], Kind: kind, Description: description, Data: fields})
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored credential %s (kind %s)\n", out.Name, out.Kind)
			return nil
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringVar(&kind, "kind", "", "Credential kind, e.g. postgres, http, nats or generic (required)")
	cmd.Flags().StringVar(&description, "description", "", "What the credential is for")
	cmd.Flags().StringVar(&data, "data", "", "The fields as a JSON object")
	cmd.Flags().StringVar(&fromFile, "from-file", "", "Read the fields from a JSON or YAML file (- for standard input)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "Set one field: key=value, kept as a string (repeatable)")
	_ = cmd.MarkFlagRequired("kind")
	cmd.MarkFlagsMutuallyExclusive("data", "from-file")
	return cmd
}

// credentialFields merges the three sources of fields. Error messages never
// quote the input: it holds the secret.
func credentialFields(stdin io.Reader, data, fromFile string, sets []string) (map[string]any, error) {
	fields := map[string]any{}
	switch {
	case data != "":
		if err := json.Unmarshal([]byte(data), &fields); err != nil || fields == nil {
			return nil, fmt.Errorf("--data must be a JSON object of fields, e.g. {\"user\": \"app\", \"password\": \"…\"}")
		}
	case fromFile != "":
		var raw []byte
		var err error
		if fromFile == "-" {
			raw, err = io.ReadAll(stdin)
		} else {
			raw, err = os.ReadFile(fromFile)
		}
		if err != nil {
			return nil, err
		}
		if fields, err = parseFieldsFile(raw); err != nil {
			return nil, fmt.Errorf("--from-file %s: %w", fromFile, err)
		}
	}
	for i, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--set number %d is not key=value", i+1)
		}
		fields[k] = v
	}
	if len(fields) == 0 {
		return nil, fmt.Errorf("a credential needs at least one field: give --data JSON, --from-file FILE or --set key=value")
	}
	return fields, nil
}

// parseFieldsFile reads a JSON or YAML object.
func parseFieldsFile(raw []byte) (map[string]any, error) {
	var fields map[string]any
	if json.Valid(raw) {
		if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
			return nil, fmt.Errorf("want a JSON object of fields")
		}
		return fields, nil
	}
	if err := yaml.Unmarshal(raw, &fields); err != nil {
		// A syntax error names a line; a type error would quote the value.
		if msg := err.Error(); strings.HasPrefix(msg, "yaml: line ") {
			return nil, fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
		}
		return nil, fmt.Errorf("want a JSON or YAML object (mapping) of fields")
	}
	if fields == nil {
		return nil, fmt.Errorf("want a JSON or YAML object (mapping) of fields; the file is empty")
	}
	if _, err := json.Marshal(fields); err != nil {
		return nil, fmt.Errorf("fields must have string keys")
	}
	return fields, nil
}

func credentialListCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use: "list", Short: "List credentials (names and metadata, never their data)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := cf.client().CredentialList(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json {
				if list == nil {
					list = []api.Credential{}
				}
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tUPDATED\tDESCRIPTION")
			for _, c := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Kind, c.UpdatedAt.Format(time.RFC3339), c.Description)
			}
			return tw.Flush()
		},
	}
	cf.bind(cmd)
	return cmd
}

func credentialDeleteCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use: "delete NAME", Short: "Delete a credential", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.client().CredentialDelete(cmd.Context(), args[0]); err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted credential %s\n", args[0])
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}
