package flow

import (
	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
)

// wireScope converts a scope for a command's payload (api.Payload).
func wireScope(s engine.Scope) *api.Scope {
	w := api.Scope(s)
	return &w
}

func keychainMap(pb *playbook.Playbook) map[string]string {
	if len(pb.Keychain) == 0 {
		return nil
	}
	m := make(map[string]string, len(pb.Keychain))
	for _, k := range pb.Keychain {
		m[k.Name] = k.Credential
	}
	return m
}
