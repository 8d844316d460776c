package bus

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://noetl:s3cret@127.0.0.1:4222", "nats://noetl:***@127.0.0.1:4222"},
		{"nats://tok3n@127.0.0.1:4222", "nats://***@127.0.0.1:4222"},
		{"tls://a:p%40ss@h1:4222, nats://b:q@h2:4222", "tls://a:***@h1:4222,nats://b:***@h2:4222"},
		{"nats://u:pa ss%zz@host:4222", "nats://***@host:4222"}, // does not parse
		{"", ""},
	}
	for _, c := range cases {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// The gateway connects without any stream settings.
func TestConnectOnlyNeedsNoStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cfg := Config{URL: sharedServer.URL(), Name: "millrace-gateway-test"}
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate accepted a config without a stream; ConnectOnly would prove nothing")
	}
	c, err := ConnectOnly(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.JS.AccountInfo(ctx); err != nil {
		t.Fatal(err)
	}
	c2, err := ConnectOnlyRetry(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()

	cfg.TLSCert = "client.pem" // without NATS_TLS_KEY
	if _, err := ConnectOnly(ctx, cfg, nil); err == nil || !strings.Contains(err.Error(), "NATS_TLS_KEY") {
		t.Fatalf("ConnectOnly with a certificate but no key = %v, want an error naming NATS_TLS_KEY", err)
	}
}

// A NATS_URL too broken to parse is refused without quoting its password
// (url.Parse's own error quotes the whole entry).
func TestBadNATSURLHidesPassword(t *testing.T) {
	t.Parallel()
	_, err := serverURLs("nats://u:pa ss%zz-hunter2@host:4222")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v: want a refusal that does not quote the password", err)
	}
}
