package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// With its PostgreSQL unreachable (the network to it cut: connections
// reset, new ones closed at once), the API answers 503 unavailable as
// JSON with Retry-After, never 500, and health says the store is down;
// once the network heals, submits succeed again.
func TestStoreDownAnswers503(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewSchema(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, u.Host)
	u.Host = px.addr()
	h := servertest.Start(t, func(c *config.Server) { c.DatabaseURL = u.String() })
	if _, err := h.API.Register(t.Context(), oneStep); err != nil {
		t.Fatal(err)
	}
	if _, err := h.API.Execute(t.Context(), "t/one", 0, nil); err != nil {
		t.Fatal(err)
	}

	px.cut()
	var last string
	wait.For(t, time.Minute, func() error {
		resp, err := http.Post(h.Srv.URL()+"/api/execute", "application/json", strings.NewReader(`{"path":"t/one"}`))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		switch resp.StatusCode {
		case http.StatusOK:
			return errors.New("still accepted: " + last) // the cut not yet seen
		case http.StatusServiceUnavailable:
		default:
			t.Fatalf("a submit with the store down got %s; want 503 unavailable", last)
		}
		var env struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(body, &env); err != nil || env.Error.Code != "unavailable" {
			t.Fatalf("503 body %q is not the unavailable envelope (%v)", body, err)
		}
		if ra := resp.Header.Get("Retry-After"); ra == "" {
			t.Fatalf("503 without Retry-After: %s", last)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("503 Content-Type = %q", ct)
		}
		return nil
	})

	// Health shares one store check among probes and may answer from one
	// a few seconds old: it says down within that.
	wait.For(t, time.Minute, func() error {
		hl, err := h.API.Health(t.Context())
		if err == nil || !strings.HasPrefix(hl.Store, "down") || hl.Status != "degraded" {
			return fmt.Errorf("health with the store down = %+v, %v; want 503 with store \"down: ...\"", hl, err)
		}
		return nil
	})

	px.heal()
	wait.For(t, 2*time.Minute, func() error {
		_, err := h.API.Execute(t.Context(), "t/one", 0, nil)
		return err
	})
	wait.For(t, time.Minute, func() error {
		hl, err := h.API.Health(t.Context())
		if err != nil || hl.Store != "ok" {
			return fmt.Errorf("health after the heal = %+v, %v", hl, err)
		}
		return nil
	})
}

// cutProxy forwards TCP to target until cut: then it resets every open
// connection and closes new ones at once, as a lost database host looks
// to a client, until heal. Its listener stays open throughout.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.pipe(c)
	}
}

func (p *cutProxy) pipe(c net.Conn) {
	p.mu.Lock()
	down := p.down
	p.mu.Unlock()
	if down {
		_ = c.Close()
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, s) {
		return
	}
	go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
	_, _ = io.Copy(c, s)
	_ = c.Close()
}

// track records an open pair, or closes it when a cut came meanwhile.
func (p *cutProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, not a clean close
		}
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *cutProxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}
