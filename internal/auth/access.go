package auth

import (
	"slices"
	"strings"

	"github.com/millrace/millrace/internal/api"
)

// Access says who may use a route. Every route the server serves declares
// one where it is registered; docs/security.md renders them all as the
// route × role matrix, and a test holds every cell.
type Access struct {
	// Public routes need no token (health, metrics, login, the UI's files).
	Public bool
	// Roles may use the route; a token of any other role gets 403.
	Roles []string
}

// Roles lists every role, most powerful first.
var Roles = []string{api.RoleAdmin, api.RoleOperator, api.RoleViewer, api.RoleWorker}

// The accesses routes use.
var (
	Public = Access{Public: true}
	// Readers read flows, queries and their results.
	Readers = Access{Roles: []string{api.RoleAdmin, api.RoleOperator, api.RoleViewer}}
	// Operators run and cancel work: register playbooks and models,
	// execute, query, refresh pre-aggregates.
	Operators = Access{Roles: []string{api.RoleAdmin, api.RoleOperator}}
	// Admins manage credentials, projects and tokens.
	Admins = Access{Roles: []string{api.RoleAdmin}}
	// Workers claim, heartbeat, report and release.
	Workers = Access{Roles: []string{api.RoleWorker}}
	// ReadersAndWorkers are reads a worker also makes (a child playbook's
	// execution and events, a command).
	ReadersAndWorkers = Access{Roles: []string{api.RoleAdmin, api.RoleOperator, api.RoleViewer, api.RoleWorker}}
	// OperatorsAndWorkers are writes a worker also makes: the playbook
	// tool starts and cancels child executions.
	OperatorsAndWorkers = Access{Roles: []string{api.RoleAdmin, api.RoleOperator, api.RoleWorker}}
	// Anyone is any valid token, whatever its role (who am I, log out).
	Anyone = Access{Roles: Roles}
)

// Allows reports whether role may use the route.
func (a Access) Allows(role string) bool { return a.Public || slices.Contains(a.Roles, role) }

// String is how the route's access reads in messages: "public" or the
// roles joined by commas.
func (a Access) String() string {
	if a.Public {
		return "public"
	}
	return strings.Join(a.Roles, ", ")
}

// ValidRole reports whether r is one of Roles.
func ValidRole(r string) bool { return slices.Contains(Roles, r) }
