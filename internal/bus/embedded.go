package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	// EmbeddedHost is the interface the embedded server listens on by
	// default: loopback, since it is for development and tests.
	EmbeddedHost = "127.0.0.1"
	// EmbeddedPort is the default port, nats-server's own.
	EmbeddedPort = 4222
	// EmbeddedReadyTimeout bounds how long StartEmbedded waits for the
	// server to accept connections.
	EmbeddedReadyTimeout = 10 * time.Second
)

// EmbeddedOptions configures StartEmbedded.
type EmbeddedOptions struct {
	// Host defaults to EmbeddedHost.
	Host string
	// Port 0 means EmbeddedPort; -1 picks a free port.
	Port int
	// StoreDir holds JetStream file storage. Empty means a temporary
	// directory that Shutdown removes.
	StoreDir string
	// User and Password, when set, are required from every client.
	User, Password string
	// Logger receives the server's log; nil silences it.
	Logger *slog.Logger
}

// Embedded is an in-process nats-server with JetStream for `millrace dev`
// and tests.
type Embedded struct {
	mu      sync.Mutex
	opts    EmbeddedOptions
	srv     *server.Server
	port    int
	tempDir string // removed on Shutdown when we created it
}

// StartEmbedded starts a JetStream-enabled server and waits until it accepts
// connections.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.Host == "" {
		opts.Host = EmbeddedHost
	}
	if opts.Port == 0 {
		opts.Port = EmbeddedPort
	}
	e := &Embedded{opts: opts}
	if opts.StoreDir == "" {
		dir, err := os.MkdirTemp("", "millrace-nats-*")
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: create JetStream store dir: %w", err)
		}
		e.tempDir, e.opts.StoreDir = dir, dir
	}
	srv, err := e.start(opts.Port)
	if err != nil {
		e.removeTemp()
		return nil, err
	}
	e.srv = srv
	e.port = srv.Addr().(*net.TCPAddr).Port
	return e, nil
}

func (e *Embedded) start(port int) (*server.Server, error) {
	so := &server.Options{
		ServerName: "millrace-embedded",
		Host:       e.opts.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   e.opts.StoreDir,
		Username:   e.opts.User,
		Password:   e.opts.Password,
		NoSigs:     true,
		NoLog:      e.opts.Logger == nil,
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	if e.opts.Logger != nil {
		srv.SetLogger(slogAdapter{e.opts.Logger.With("component", "nats-server")}, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(EmbeddedReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not accept connections on %s within %v; is the port in use?",
			net.JoinHostPort(e.opts.Host, strconv.Itoa(port)), EmbeddedReadyTimeout)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("embedded NATS started without JetStream; check that the store dir is writable")
	}
	return srv, nil
}

// URL is the client URL, without credentials.
func (e *Embedded) URL() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return "nats://" + net.JoinHostPort(e.opts.Host, strconv.Itoa(e.port))
}

// URLWithCredentials is URL with the configured user and password embedded.
func (e *Embedded) URLWithCredentials() string {
	u, _ := url.Parse(e.URL())
	if e.opts.User != "" {
		u.User = url.UserPassword(e.opts.User, e.opts.Password)
	}
	return u.String()
}

// Server is the running nats-server, for tests that need its internals.
func (e *Embedded) Server() *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv
}

// Shutdown stops the server and removes a store directory StartEmbedded made.
func (e *Embedded) Shutdown() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		e.srv = nil
	}
	e.removeTemp()
}

func (e *Embedded) removeTemp() {
	if e.tempDir != "" {
		os.RemoveAll(e.tempDir)
		e.tempDir = ""
	}
}

// Restart stops the server and starts a new one on the same port and store
// directory, as a NATS restart would: clients reconnect, memory streams are
// gone, file streams survive.
func (e *Embedded) Restart() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		e.srv = nil
	}
	srv, err := e.start(e.port)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	e.srv = srv
	return nil
}

// slogAdapter routes nats-server logging to slog. Fatalf logs at error level
// instead of exiting: an embedded server must not end the process.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
