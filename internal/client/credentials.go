package client

import (
	"context"
	"net/url"

	"github.com/millrace/millrace/internal/api"
)

// CredentialPut creates or replaces a credential (Name, Kind, Description
// and a non-empty Data) and returns its metadata.
func (c *Client) CredentialPut(ctx context.Context, cred api.Credential) (api.Credential, error) {
	in := api.CredentialRequest{Name: cred.Name, Kind: cred.Kind, Description: cred.Description, Data: cred.Data}
	var out api.Credential
	err := c.do(ctx, "POST", "/api/credentials", in, &out)
	return out, err
}

// CredentialList lists every credential's metadata, by name.
func (c *Client) CredentialList(ctx context.Context) ([]api.Credential, error) {
	var out api.CredentialList
	err := c.do(ctx, "GET", "/api/credentials", nil, &out)
	return out.Credentials, err
}

// CredentialGet fetches one credential. Only with includeData does the
// reply carry the decrypted Data; workers use that to resolve `auth: NAME`.
// An unknown name is a 404 credential_not_found.
func (c *Client) CredentialGet(ctx context.Context, name string, includeData bool) (api.Credential, error) {
	path := "/api/credentials/" + url.PathEscape(name)
	if includeData {
		path += "?include_data=true"
	}
	var out api.Credential
	err := c.do(ctx, "GET", path, nil, &out)
	return out, err
}

// CredentialDelete removes a credential; an unknown name is a 404
// credential_not_found.
func (c *Client) CredentialDelete(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/api/credentials/"+url.PathEscape(name), nil, nil)
}

// CredentialReseal seals every credential and project connection again
// under the server's MILLRACE_SECRET_KEY (after a key rotation).
func (c *Client) CredentialReseal(ctx context.Context) (api.ResealReport, error) {
	var out api.ResealReport
	err := c.do(ctx, "POST", "/api/credentials/reseal", struct{}{}, &out)
	return out, err
}
