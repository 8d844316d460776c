package bus

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/backoff"
)

const (
	// ReconnectWaitMin and ReconnectWaitMax bound the delay between reconnect
	// attempts. A restarted local server is back within a second, and a
	// 1s ceiling keeps the outage a publisher sees short.
	ReconnectWaitMin = 250 * time.Millisecond
	ReconnectWaitMax = time.Second
	// ConnectTimeout bounds one dial of a NATS server.
	ConnectTimeout = 2 * time.Second
	// ConnectRetryMax caps the backoff between ConnectRetry attempts.
	ConnectRetryMax = 5 * time.Second
)

// Conn is a NATS connection with its JetStream context and the configuration
// it was made with. Its methods are safe for concurrent use.
type Conn struct {
	NC  *nats.Conn
	JS  jetstream.JetStream
	Cfg Config

	log *slog.Logger
}

// Connect dials NATS once and fails fast if it is unreachable or has no
// JetStream. Once connected, the client reconnects forever.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return connect(ctx, cfg, log)
}

// ConnectOnly is Connect without the command stream's contract: it checks
// only the settings needed to reach NATS (URL, user, TLS, credentials), so
// Stream, Subject, Consumer and the consumer limits may be left empty. The
// connection still needs JetStream (key-value buckets live there). The
// gateway uses it.
func ConnectOnly(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	if err := cfg.ValidateConnection(); err != nil {
		return nil, err
	}
	return connect(ctx, cfg, log)
}

// ConnectOnlyRetry is ConnectOnly for processes that may start before NATS,
// retrying like ConnectRetry.
func ConnectOnlyRetry(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	if err := cfg.ValidateConnection(); err != nil {
		return nil, err
	}
	return connectRetry(ctx, cfg, log)
}

// ConnectRetry is Connect for processes that may start before NATS: it retries
// with backoff until it connects or ctx ends. Configuration errors are
// returned at once.
func ConnectRetry(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return connectRetry(ctx, cfg, log)
}

func connectRetry(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	log = orDiscard(log)
	bo := backoff.Backoff{Min: ReconnectWaitMin, Max: ConnectRetryMax}
	for {
		c, err := connect(ctx, cfg, log)
		if err == nil {
			return c, nil
		}
		delay := bo.Next()
		log.Warn("NATS not reachable yet, retrying", "error", err, "retry_in", delay)
		if !backoff.Sleep(ctx, delay) {
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		}
	}
}

func connect(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	log = orDiscard(log)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	servers, shown, err := dialURLs(cfg)
	if err != nil {
		return nil, err
	}
	secure, err := securityOptions(cfg)
	if err != nil {
		return nil, err
	}
	name := cfg.Name
	if name == "" {
		name = DefaultName
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(ConnectTimeout),
		nats.MaxReconnects(-1),
		// Jittered, so that every client of a restarted server does not
		// come back in the same instant.
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return backoff.Delay(attempts-1, ReconnectWaitMin, ReconnectWaitMax)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() || err == nil {
				return // our own Close, not an outage
			}
			log.Warn("NATS disconnected, reconnecting", "url", shown, "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", Redact(nc.ConnectedUrl()))
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug("NATS connection closed", "url", shown)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS asynchronous error", "subject", subject, "error", err)
		}),
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	opts = append(opts, secure...)
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w; %s", shown, err, connectHint(cfg, err))
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(DefaultPublishAckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS at %s: create JetStream context: %w", shown, err)
	}
	// Without JetStream every publish would fail later with an obscure
	// "no responders"; say so now instead.
	if _, err := js.AccountInfo(ctx); err != nil {
		nc.Close()
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, fmt.Errorf("NATS at %s has JetStream disabled: %w; start nats-server with -js or enable JetStream for this account", shown, err)
		}
		return nil, fmt.Errorf("NATS at %s: query JetStream account: %w; check that nats-server runs with -js", shown, err)
	}
	log.Info("connected to NATS", "url", Redact(nc.ConnectedUrl()), "server", nc.ConnectedServerName())
	return &Conn{NC: nc, JS: js, Cfg: cfg, log: log}, nil
}

// dialURLs returns the server list to dial and a password-free rendering of it
// for logs and errors. Explicit User/Password replace URL credentials because
// nats.go would otherwise prefer the URL's.
func dialURLs(cfg Config) (dial, shown string, err error) {
	urls, err := serverURLs(cfg.URL)
	if err != nil {
		return "", "", err
	}
	d := make([]string, len(urls))
	s := make([]string, len(urls))
	for i, u := range urls {
		if cfg.User != "" {
			u.User = nil
		}
		d[i] = u.String()
		s[i] = Redact(d[i])
	}
	return strings.Join(d, ","), strings.Join(s, ","), nil
}

// connectHint says which settings to check after a failed dial.
func connectHint(cfg Config, err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &unknownCA):
		if cfg.TLSCA == "" {
			return "the server's certificate is not signed by a CA this machine trusts; set NATS_TLS_CA to the PEM file of the CA that signed it"
		}
		return "the server's certificate is not signed by the CA in NATS_TLS_CA (" + cfg.TLSCA + "); point NATS_TLS_CA at the CA that signed it"
	case errors.As(err, &hostname):
		return "the server's certificate does not name the host in NATS_URL; connect by a name the certificate lists"
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization"):
		return "the server refused the credentials; check NATS_USER/NATS_PASSWORD (or those in NATS_URL), NATS_CREDS or NATS_NKEY"
	case cfg.usesTLS() || errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted):
		return "check NATS_URL, NATS_TLS_CA, NATS_TLS_CERT/NATS_TLS_KEY (TLS must be on at both ends) and that nats-server is running with JetStream enabled (nats-server -js)"
	}
	return "check NATS_URL (and NATS_USER/NATS_PASSWORD, NATS_CREDS, NATS_NKEY) and that nats-server is running with JetStream enabled (nats-server -js)"
}

// Close closes the connection; pending publishes fail.
func (c *Conn) Close() {
	c.NC.Close()
}

// FetchOpts are the pull options for Consumer.Fetch derived from the config:
// FetchTimeout as max wait and FetchHeartbeat as idle heartbeat.
func (c *Conn) FetchOpts() []jetstream.FetchOpt {
	opts := []jetstream.FetchOpt{jetstream.FetchMaxWait(c.Cfg.FetchTimeout)}
	if c.Cfg.FetchHeartbeat > 0 {
		opts = append(opts, jetstream.FetchHeartbeat(c.Cfg.FetchHeartbeat))
	}
	return opts
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// logger tolerates a Conn built by hand rather than by Connect.
func (c *Conn) logger() *slog.Logger {
	return orDiscard(c.log)
}

// BatchFailed reports whether a pull batch ended abnormally (a missing
// heartbeat, a deleted consumer after a NATS restart) rather than by
// expiring, being cancelled or finding no messages. Workers then look the
// consumer up again.
func BatchFailed(err error) bool {
	return err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, jetstream.ErrNoMessages)
}
