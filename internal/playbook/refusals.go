package playbook

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// refusedKinds are NoETL tool kinds Millrace deliberately does not
// implement, with what to use instead. docs/compat.md lists them; the
// corpus test keeps the two in step.
var refusedKinds = map[string]string{
	"snowflake":    "query Snowflake from a python tool (snowflake-connector-python, credentials through keychain), or load the data into postgres or duckdb",
	"ducklake":     "use a duckdb tool (a DuckLake catalog can be attached in its query where the worker has the ducklake extension) or a postgres tool",
	"container":    "run the program with a shell tool on the worker (cmds: [docker run ...] or kubectl) and read its output",
	"script":       "put the code inline: a python tool's code, or a shell tool's cmds",
	"artifact":     "read and write files with a duckdb tool (read_csv, COPY ... TO) or a python tool",
	"transfer":     "read with one tool and write with the next: a step that fetches (http, postgres) and one that loads (postgres, duckdb with attach)",
	"subscription": "consume messages with a nats tool, or poll with an http tool in a loop",
	"agent":        "call the model's HTTP API with an http tool, or run the agent's code in a python tool",
	"gcs":          "read and write objects with a python tool (google-cloud-storage) or an http tool against the GCS JSON API",
	"mcp":          "call the MCP server's HTTP endpoint with an http tool",
}

// refusedKindProblem reports a refused tool kind at node n.
func (ps *parser) refusedKindProblem(n *yaml.Node, owner, kind string) {
	ps.atNode(n, refusedKinds[kind], "%s: tool kind %q is NoETL's; Millrace does not implement it", owner, kind)
}

// providerKeychainKeys are the keys of NoETL's provider keychain entries:
// tokens minted or fetched when the playbook runs (OAuth2 client
// credentials, Google ID tokens, Secret Manager lookups, inline bearer
// tokens and static maps). Millrace resolves a keychain entry only from a
// stored credential.
var providerKeychainKeys = []string{"provider", "auth", "map", "token", "auto_renew", "endpoint", "method", "headers",
	"data", "service_account_secret", "service_account_credential", "target_audience", "secret", "secret_name", "audience", "client_id", "client_secret"}

const hintProviderKeychain = "mint or fetch the token outside the playbook and store it as a credential (POST /api/credentials, or --credentials for millrace run), then write `{name: <entry>, credential: <stored credential>}`; templates read keychain.<entry>.<field>"

// providerKeychain reports a keychain entry in NoETL's provider form once,
// naming the keys that make it one; it returns false for an ordinary entry.
func (ps *parser) providerKeychain(item *yaml.Node, f map[string]entry) bool {
	var given []string
	for _, k := range sortedKeys(f) {
		for _, p := range providerKeychainKeys {
			if k == p {
				given = append(given, k)
			}
		}
	}
	if len(given) == 0 {
		return false
	}
	name := ""
	if e, ok := f["name"]; ok {
		name = fmt.Sprintf(" %q", deref(e.val).Value)
	}
	ps.atNode(item, hintProviderKeychain, "keychain entry%s uses NoETL's provider keychain (%s); Millrace lacks OAuth and provider token minting and resolves keychain entries only from stored credentials",
		name, strings.Join(given, ", "))
	return true
}
