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

// MILLRACE_WORKER_ACK takes claim or completion, from the flag or the
// environment; anything else is refused where it is read, by name.
func TestWorkerAckChoice(t *testing.T) {
	t.Setenv("MILLRACE_WORKER_ACK", "completion")
	var c Worker
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	if err := WorkerSet(&c).Bind(fs); err != nil {
		t.Fatal(err)
	}
	if c.AckOn != AckOnCompletion {
		t.Fatalf("AckOn = %q from the environment, want completion", c.AckOn)
	}
	if err := fs.Parse([]string{"--ack", "claim"}); err != nil || c.AckOn != AckOnClaim {
		t.Fatalf("--ack claim: AckOn = %q, err %v", c.AckOn, err)
	}
	if err := fs.Parse([]string{"--ack", "done"}); err == nil || !strings.Contains(err.Error(), "want claim or completion") {
		t.Fatalf("--ack done: err %v, want a refusal naming the choices", err)
	}

	t.Setenv("MILLRACE_WORKER_ACK", "claimed")
	err := WorkerSet(&Worker{}).Bind(pflag.NewFlagSet("worker", pflag.ContinueOnError))
	if err == nil || !strings.Contains(err.Error(), "MILLRACE_WORKER_ACK") || !strings.Contains(err.Error(), `"claimed"`) {
		t.Fatalf("MILLRACE_WORKER_ACK=claimed: err %v, want one naming the variable and the value", err)
	}
	if err := CheckWorkerAck(""); err == nil || !strings.Contains(err.Error(), "MILLRACE_WORKER_ACK") {
		t.Fatalf("CheckWorkerAck(\"\") = %v, want a refusal naming MILLRACE_WORKER_ACK", err)
	}
}
