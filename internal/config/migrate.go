package config

// databaseURLHelp is DATABASE_URL's meaning wherever the event store is
// named (server, migrate): one row in docs/configuration.md.
const databaseURLHelp = "Event store: postgres://… or sqlite:PATH (sqlite::memory: for a throwaway store)."

// Migrate holds `millrace migrate` settings: the store, and the tokens a
// deployment hands its roles, which --ensure-tokens registers (the Helm
// chart's hook Job passes the ones of its Secret).
type Migrate struct {
	DatabaseURL  string
	WorkerToken  string
	GatewayToken string
	AdminToken   string
}

func (c *Migrate) bind(s *Set) {
	s.String(&c.DatabaseURL, "DATABASE_URL", "database-url", DefaultDatabaseURL, databaseURLHelp)
	s.String(&c.WorkerToken, "MILLRACE_WORKER_TOKEN", "worker-token", "", "With --ensure-tokens: an API token secret (mrt_…) to register with role worker, named helm-worker, unless the store already has it; the workers present it.")
	s.String(&c.GatewayToken, "MILLRACE_GATEWAY_TOKEN", "gateway-token", "", "With --ensure-tokens: an API token secret (mrt_…) to register with role operator, named helm-gateway, unless the store already has it; the gateway starts webhook executions with it.")
	s.String(&c.AdminToken, "MILLRACE_ADMIN_TOKEN", "admin-token", "", "With --ensure-tokens: an API token secret (mrt_…) to register with role admin, named helm-admin, unless the store already has it: a deployment's first admin token.")
}

// MigrateSet binds `millrace migrate` settings.
func MigrateSet(c *Migrate) *Set { s := &Set{}; c.bind(s); return s }
