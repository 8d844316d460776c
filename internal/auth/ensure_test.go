package auth_test

import (
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/store"
)

// What --ensure-tokens accepts: the secrets NewSecret makes and the ones a
// Helm chart makes with "mrt_" + randAlphaNum 43; nothing shorter, no
// other prefix, no characters outside base64url.
func TestCheckAPISecret(t *testing.T) {
	t.Parallel()
	good := []string{auth.NewSecret(store.TokenAPI), "mrt_" + strings.Repeat("aZ09", 10) + "xyz", "mrt_" + strings.Repeat("a-_", 30)}
	for _, s := range good {
		if err := auth.CheckAPISecret(s); err != nil {
			t.Errorf("CheckAPISecret(%q) = %v", s, err)
		}
	}
	bad := []string{"", "changeme", "mrt_short", auth.NewSecret(store.TokenSession), "mrt_" + strings.Repeat("a", 42) + "!",
		"MRT_" + strings.Repeat("a", 43), "mrt_" + strings.Repeat("a", 42)}
	for _, s := range bad {
		err := auth.CheckAPISecret(s)
		if err == nil {
			t.Errorf("CheckAPISecret(%q) accepted", s)
		} else if !strings.Contains(err.Error(), "make one with") {
			t.Errorf("CheckAPISecret(%q) = %v: does not say how to make one", s, err)
		}
	}
}
