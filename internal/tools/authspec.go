package tools

import "slices"

// authEntry is one entry of NoETL's tool-level `auth` (duckdb, python): a
// name (a DuckDB secret's, a python alias), the stored credential it reads,
// and the optional tool (also spelled type or service) and scope.
type authEntry struct {
	name, tool, cred, scope string
}

// authKeys are the keys an `auth` entry's mapping may hold.
var authKeys = []string{"source", "tool", "type", "service", "key", "credential", "scope"}

// parseAuth reads `auth` as NoETL writes it for kind: a credential name
// (one entry of that name), or a mapping name -> credential name or
// {source: credential, tool, key, scope}. nil is no entries. Millrace reads
// secrets only from stored credentials, so any other source is refused.
func parseAuth(kind string, a any) ([]authEntry, error) {
	bad := func(format string, args ...any) error { return configError(kind, "auth", format, args...) }
	switch a := a.(type) {
	case nil:
		return nil, nil
	case string:
		return []authEntry{{name: a, cred: a}}, nil
	case map[string]any:
		var out []authEntry
		for _, name := range sortedKeys(a) {
			e := authEntry{name: name}
			switch v := a[name].(type) {
			case string:
				e.cred = v
			case map[string]any:
				for k := range v {
					if !slices.Contains(authKeys, k) {
						return nil, bad("%q has unknown key %q; allowed: source, tool, key, scope", name, k)
					}
				}
				if src, _ := v["source"].(string); src != "" && src != "credential" {
					return nil, bad("%q: source %q is not supported; Millrace reads auth only from stored credentials (source: credential)", name, src)
				}
				e.tool = firstString(v, "tool", "type", "service")
				e.cred = firstString(v, "key", "credential")
				e.scope, _ = v["scope"].(string)
			default:
				return nil, bad("%q must be a credential name or {tool, key, scope}, got %s", name, describe(v))
			}
			if e.cred == "" {
				return nil, bad("%q names no credential; add key: <stored credential>", name)
			}
			out = append(out, e)
		}
		return out, nil
	default:
		return nil, bad("must be a credential name or a mapping of name -> {tool, key, scope}, got %s", describe(a))
	}
}

// firstString is the first of keys whose value in m is a non-empty string
// or scalar, as text; "" when none is.
func firstString(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := scalarString(m[k]); ok && s != "" {
			return s
		}
	}
	return ""
}
