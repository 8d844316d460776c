package client

import (
	"context"
	"net/url"

	"github.com/millrace/millrace/internal/api"
)

// TokenCreate makes an API token (admin only); the reply holds the secret,
// which the server never shows again.
func (c *Client) TokenCreate(ctx context.Context, in api.TokenCreate) (api.TokenCreated, error) {
	var out api.TokenCreated
	err := c.do(ctx, "POST", "/api/tokens", in, &out)
	return out, err
}

// TokenList lists the API tokens, revoked ones included (admin only).
func (c *Client) TokenList(ctx context.Context) ([]api.Token, error) {
	var out api.TokenList
	err := c.do(ctx, "GET", "/api/tokens", nil, &out)
	return out.Tokens, err
}

// TokenRevoke revokes the API token with this id, or the only live one with
// this name (admin only).
func (c *Client) TokenRevoke(ctx context.Context, idOrName string) (api.Token, error) {
	var out api.Token
	err := c.do(ctx, "DELETE", "/api/tokens/"+url.PathEscape(idOrName), nil, &out)
	return out, err
}

// Login exchanges an OIDC id_token or an API token for a session.
func (c *Client) Login(ctx context.Context, in api.LoginRequest) (api.LoginReply, error) {
	var out api.LoginReply
	err := c.do(ctx, "POST", "/api/auth/login", in, &out)
	return out, err
}

// Logout ends the session the client's token is.
func (c *Client) Logout(ctx context.Context) error {
	return c.do(ctx, "POST", "/api/auth/logout", struct{}{}, nil)
}

// WhoAmI says who the client's token speaks for (AuthDisabled when the
// server runs with MILLRACE_AUTH=none).
func (c *Client) WhoAmI(ctx context.Context) (api.WhoAmI, error) {
	var out api.WhoAmI
	err := c.do(ctx, "GET", "/api/auth/whoami", nil, &out)
	return out, err
}

// AuthConfig fetches the server's login settings (no token needed).
func (c *Client) AuthConfig(ctx context.Context) (api.AuthConfig, error) {
	var out api.AuthConfig
	err := c.do(ctx, "GET", "/api/auth/config", nil, &out)
	return out, err
}
