package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// redacted replaces secrets in URLs shown in logs and errors.
const redacted = "***"

// Redact returns a NATS URL (or a comma-separated list of them) with every
// credential replaced by ***: the password of user:pass@, and a bare
// token@ or nkey@ (NATS reads a user without a password as a token). Use it
// wherever a NATS URL reaches a log line, an error or a report.
func Redact(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, raw := range parts {
		parts[i] = redactOne(raw)
	}
	return strings.Join(parts, ",")
}

func redactOne(raw string) string {
	raw = strings.TrimSpace(raw)
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		cred := redacted
		if _, hasPass := u.User.Password(); hasPass {
			cred = url.User(u.User.Username()).String() + ":" + redacted
		}
		u.User = nil
		s := u.String()
		if i := strings.Index(s, "://"); i >= 0 {
			return s[:i+3] + cred + "@" + s[i+3:]
		}
		return cred + "@" + s
	}
	// Not a URL we can parse: hide everything between the scheme and the
	// last @, which is where credentials sit.
	at := strings.LastIndexByte(raw, '@')
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return raw[:start] + redacted + raw[at:]
}

// validateSecurity checks the TLS and credential settings that need no
// file access.
func (c Config) validateSecurity() []error {
	var errs []error
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("NATS_TLS_CERT and NATS_TLS_KEY go together (the client certificate and its private key); set both or neither"))
	}
	if c.CredsFile != "" && c.NKeyFile != "" {
		errs = append(errs, errors.New("NATS_CREDS and NATS_NKEY are both set; a connection authenticates with one of them, so set only one"))
	}
	if c.User != "" && (c.CredsFile != "" || c.NKeyFile != "") {
		errs = append(errs, errors.New("NATS_USER is set together with NATS_CREDS or NATS_NKEY; a connection authenticates one way, so unset one of them"))
	}
	return errs
}

// securityOptions turns the TLS and credential settings into nats.go
// options. Files are read now, so an unreadable or malformed file is
// reported with the setting that names it rather than as a failed dial.
func securityOptions(c Config) ([]nats.Option, error) {
	var opts []nats.Option
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("NATS_TLS_CA: read %s: %w; point it at the PEM file of the CA that signed the NATS server's certificate", c.TLSCA, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("NATS_TLS_CA: %s holds no PEM certificate; point it at the CA certificate (-----BEGIN CERTIFICATE-----)", c.TLSCA)
		}
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return nil, fmt.Errorf("NATS_TLS_CERT/NATS_TLS_KEY: load %s and %s: %w; they must be the PEM client certificate and its private key", c.TLSCert, c.TLSKey, err)
		}
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	if c.CredsFile != "" {
		if _, err := os.ReadFile(c.CredsFile); err != nil {
			return nil, fmt.Errorf("NATS_CREDS: read %s: %w; point it at the .creds file made by nsc (user JWT and nkey seed)", c.CredsFile, err)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeyFile != "" {
		if _, err := os.ReadFile(c.NKeyFile); err != nil {
			return nil, fmt.Errorf("NATS_NKEY: read %s: %w; point it at a file holding the user's nkey seed (SU...)", c.NKeyFile, err)
		}
		opt, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY: %s: %w; it must hold a user nkey seed (SU...), e.g. from `nk -gen user`", c.NKeyFile, err)
		}
		opts = append(opts, opt)
	}
	return opts, nil
}

// usesTLS reports whether the settings ask for TLS, for hints in errors.
func (c Config) usesTLS() bool {
	return c.TLSCA != "" || c.TLSCert != "" || strings.Contains(c.URL, "tls://")
}
