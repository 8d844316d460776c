package tools

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
)

// pythonAuthEnv reads NoETL's python `auth`: credentials handed to the code
// as the environment variables cloud SDKs discover (NoETL does the same):
// a Google service account becomes GOOGLE_APPLICATION_CREDENTIALS (a file
// of its JSON, removed when the run ends), HMAC and S3 keys become
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION), an
// Azure connection string AZURE_STORAGE_CONNECTION_STRING. auth is a
// credential name or a mapping alias -> credential name or {source:
// credential, tool (or service, type), key}. The tool's own env wins.
func pythonAuthEnv(ctx context.Context, cfg map[string]any) (env map[string]string, cleanup func(), err error) {
	env = map[string]string{}
	var files []string
	cleanup = func() {
		for _, f := range files {
			os.Remove(f)
		}
	}
	wants, err := parseAuth("python", cfg["auth"])
	if err != nil || len(wants) == 0 {
		return env, cleanup, err
	}
	for _, w := range wants {
		fields, err := credentialFields(ctx, "python", w.cred)
		if err != nil {
			cleanup()
			return nil, func() {}, err
		}
		typ := strings.ToLower(w.tool)
		if typ == "" {
			typ, _ = fields["type"].(string)
		}
		get := func(keys ...string) string { return firstString(fields, keys...) }
		switch {
		case slices.Contains([]string{"service_account", "gcs_service_account", "google_service_account", "gcs"}, typ) &&
			(fields["service_account_json"] != nil || fields["private_key"] != nil):
			sa := fields["service_account_json"]
			if sa == nil {
				sa = fields
			}
			var data []byte
			if s, ok := sa.(string); ok {
				data = []byte(s)
			} else if data, err = json.Marshal(sa); err != nil {
				cleanup()
				return nil, func() {}, configError("python", "auth", "%q: credential %q cannot be written as JSON: %v", w.name, w.cred, err)
			}
			f, err := os.CreateTemp("", "millrace-sa-*.json") // mode 0600
			if err == nil {
				files = append(files, f.Name())
				_, err = f.Write(data)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				cleanup()
				return nil, func() {}, &Error{Kind: "python", Retryable: true, Message: "cannot write the service account file for auth " + w.name + ": " + err.Error()}
			}
			env["GOOGLE_APPLICATION_CREDENTIALS"] = files[len(files)-1]
		case slices.Contains([]string{"hmac", "gcs_hmac", "s3", "s3_hmac", "aws", "gcs"}, typ):
			id, secret := get("access_key_id", "key_id", "hmac_key_id"), get("secret_access_key", "secret", "secret_key", "hmac_secret")
			if id == "" || secret == "" {
				cleanup()
				return nil, func() {}, configError("python", "auth", "%q: credential %q has no access_key_id and secret_access_key (or key_id and secret)", w.name, w.cred)
			}
			env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = id, secret
			if r := get("region"); r != "" {
				env["AWS_DEFAULT_REGION"] = r
			}
		case slices.Contains([]string{"azure", "azure_storage"}, typ) && get("connection_string") != "":
			env["AZURE_STORAGE_CONNECTION_STRING"] = get("connection_string")
		default:
			cleanup()
			return nil, func() {}, configError("python", "auth", "%q: credential type %q is not supported; Millrace hands python a Google service account, HMAC/S3 keys or an Azure connection string (pass anything else with env: {NAME: \"{{ keychain.x.field }}\"})", w.name, typ)
		}
	}
	return env, cleanup, nil
}
