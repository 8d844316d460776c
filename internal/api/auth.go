package api

import "time"

// Roles. A token has exactly one.
const (
	RoleAdmin    = "admin"    // everything an operator may, plus credentials, projects and tokens
	RoleOperator = "operator" // run and cancel: register playbooks and models, execute, query, refresh
	RoleViewer   = "viewer"   // read only
	RoleWorker   = "worker"   // claim, heartbeat, report; read credential data and project connections
)

// TokenCreate is the body of POST /api/tokens.
type TokenCreate struct {
	Role      string     `json:"role"`
	Name      string     `json:"name,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Token describes an API token or a session; the secret is never in it.
type Token struct {
	ID         int64      `json:"id"`
	Kind       string     `json:"kind"` // api | session
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Subject    string     `json:"subject,omitempty"`
	Email      string     `json:"email,omitempty"`
	CreatedBy  string     `json:"created_by,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// TokenCreated is the reply of POST /api/tokens: the only time the secret
// is shown.
type TokenCreated struct {
	Token
	Secret string `json:"token"`
}

// TokenList is the reply of GET /api/tokens.
type TokenList struct {
	Tokens []Token `json:"tokens"`
}

// LoginRequest is the body of POST /api/auth/login: an OIDC id_token, or an
// API token to exchange for a session (for the browser).
type LoginRequest struct {
	IDToken  string `json:"id_token,omitempty"`
	APIToken string `json:"api_token,omitempty"`
	// SessionDurationHours shortens the session (never beyond the server's
	// MILLRACE_SESSION_TTL_SECONDS); NoETL's name.
	SessionDurationHours float64 `json:"session_duration_hours,omitempty"`
}

// User is who a token or session speaks for.
type User struct {
	UserID      string   `json:"user_id"`
	Email       string   `json:"email,omitempty"`
	DisplayName string   `json:"display_name,omitempty"`
	Roles       []string `json:"roles"`
}

// LoginReply is the reply of POST /api/auth/login, in NoETL's shape.
type LoginReply struct {
	Status       string    `json:"status"` // "authenticated"
	SessionToken string    `json:"session_token"`
	User         User      `json:"user"`
	ExpiresAt    time.Time `json:"expires_at"`
	Message      string    `json:"message,omitempty"`
}

// WhoAmI is the reply of GET /api/auth/whoami: the caller's identity, as
// the gateway caches it in the sessions bucket.
type WhoAmI struct {
	TokenID   int64      `json:"token_id"`
	Kind      string     `json:"kind"`
	Role      string     `json:"role"`
	User      User       `json:"user"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// AuthDisabled is true when the server runs with MILLRACE_AUTH=none.
	AuthDisabled bool `json:"auth_disabled,omitempty"`
}

// AuthConfig is the reply of GET /api/auth/config (no token needed): what
// a login page needs to know.
type AuthConfig struct {
	Auth string      `json:"auth"` // tokens | none
	OIDC *OIDCConfig `json:"oidc"`
}

// OIDCConfig names the issuer and client id browsers log in with.
type OIDCConfig struct {
	Issuer   string `json:"issuer"`
	ClientID string `json:"client_id"`
}

// LiveNote is what the server publishes on NATS_UPDATES_SUBJECT_PREFIX +
// execution id after a commit: a wake-up naming the event, never the
// event's payload (readers fetch that from the event table).
type LiveNote struct {
	ExecutionID int64     `json:"execution_id"`
	EventID     int64     `json:"event_id"`
	EventType   string    `json:"event_type"`
	Step        string    `json:"step,omitempty"`
	Status      string    `json:"status,omitempty"`
	At          time.Time `json:"at"`
}
