package client

import (
	"context"
	"net/url"
	"time"
)

// Credential is a named secret as the API shows it. Data is filled only by
// CredentialGet with includeData; every other reply carries metadata only.
type Credential struct {
	Name        string         `json:"name"`
	Kind        string         `json:"kind"`
	Description string         `json:"description"`
	Data        map[string]any `json:"data,omitempty"`
	CreatedAt   time.Time      `json:"created_at,omitzero"`
	UpdatedAt   time.Time      `json:"updated_at,omitzero"`
}

// CredentialPut creates or replaces a credential (Name, Kind, Description
// and a non-empty Data) and returns its metadata.
func (c *Client) CredentialPut(ctx context.Context, cred Credential) (Credential, error) {
	in := struct {
		Name        string         `json:"name"`
		Kind        string         `json:"kind"`
		Description string         `json:"description,omitempty"`
		Data        map[string]any `json:"data"`
	}{cred.Name, cred.Kind, cred.Description, cred.Data}
	var out Credential
	err := c.do(ctx, "POST", "/api/credentials", in, &out)
	return out, err
}

// CredentialList lists every credential's metadata, by name.
func (c *Client) CredentialList(ctx context.Context) ([]Credential, error) {
	var out struct {
		Credentials []Credential `json:"credentials"`
	}
	err := c.do(ctx, "GET", "/api/credentials", nil, &out)
	return out.Credentials, err
}

// CredentialGet fetches one credential. Only with includeData does the
// reply carry the decrypted Data; workers use that to resolve `auth: NAME`.
// An unknown name is a 404 credential_not_found.
func (c *Client) CredentialGet(ctx context.Context, name string, includeData bool) (Credential, error) {
	path := "/api/credentials/" + url.PathEscape(name)
	if includeData {
		path += "?include_data=true"
	}
	var out Credential
	err := c.do(ctx, "GET", path, nil, &out)
	return out, err
}

// CredentialDelete removes a credential; an unknown name is a 404
// credential_not_found.
func (c *Client) CredentialDelete(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/api/credentials/"+url.PathEscape(name), nil, nil)
}
