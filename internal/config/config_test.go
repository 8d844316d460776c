package config

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// --help shows the current value of each setting as its default; secrets
// taken from the environment must not appear there.
func TestHelpHidesSecrets(t *testing.T) {
	t.Setenv("NATS_URL", "nats://millrace:n4ts-pw@nats.example:4222")
	t.Setenv("NATS_PASSWORD", "n4ts-pw2")
	t.Setenv("MILLRACE_WORKER_TOKEN", "mrt_w0rker")
	var c Worker
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	if err := WorkerSet(&c).Bind(fs); err != nil {
		t.Fatal(err)
	}
	usage := fs.FlagUsages()
	for _, secret := range []string{"n4ts-pw", "mrt_w0rker"} {
		if strings.Contains(usage, secret) {
			t.Errorf("--help shows %q:\n%s", secret, usage)
		}
	}
	if !strings.Contains(usage, "nats://millrace:***@nats.example:4222") {
		t.Errorf("--help does not show the redacted NATS_URL:\n%s", usage)
	}
	if c.NATS.URL != "nats://millrace:n4ts-pw@nats.example:4222" || c.Token != "mrt_w0rker" {
		t.Errorf("the settings themselves must keep the real values: %q %q", c.NATS.URL, c.Token)
	}
}
