// Package auth owns who may do what: the roles, API tokens and sessions
// (made, hashed, looked up, revoked), OIDC id_token verification, and the
// route × role policy the server enforces and docs/security.md renders.
package auth
