package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/worker/commands"
)

// liveStack is one server (in-process, SQLite, embedded NATS) with one
// commands worker, and what its gateway replicas share.
type liveStack struct {
	t *testing.T
	*servertest.Harness
	gw config.Gateway // the replicas' shared settings
}

var stackSeq atomic.Int64

func newLiveStack(t *testing.T, withWorker bool, mods ...func(*config.Server)) *liveStack {
	t.Helper()
	h := servertest.Start(t, func(c *config.Server) {
		c.NATS.FetchTimeout, c.NATS.FetchHeartbeat = time.Second, 400*time.Millisecond
		c.Query.ResultsDir = t.TempDir()
		for _, m := range mods {
			m(c)
		}
	})
	if withWorker {
		wcfg := config.Worker{NATS: h.Cfg.NATS, ServerURL: h.Srv.URL(), WorkerID: "w-" + h.Cfg.NATS.Consumer, Concurrency: 4, ShutdownGrace: 5 * time.Second}
		wcfg.Query.ResultsDir = t.TempDir()
		if h.Cfg.Auth.Mode == config.AuthTokens {
			wcfg.Token = h.Token(t, api.RoleWorker)
		}
		w, err := commands.New(t.Context(), wcfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	if h.Cfg.Auth.Mode == config.AuthTokens {
		h.API = client.New(h.Srv.URL()).WithToken(h.Token(t, api.RoleAdmin))
	}
	var gw config.Gateway
	config.GatewaySet(&gw) // defaults
	n := stackSeq.Add(1)
	gw.NATS.URL = h.NATS.URL()
	gw.ServerURL = h.Srv.URL()
	gw.UpdatesPrefix = h.Cfg.UpdatesPrefix
	gw.CallbackPrefix = fmt.Sprintf("test%d.callbacks", n)
	gw.SessionBucket = fmt.Sprintf("sessions_%d", n)
	gw.RequestBucket = fmt.Sprintf("requests_%d", n)
	gw.Addr = "127.0.0.1:0"
	return &liveStack{t: t, Harness: h, gw: gw}
}

// replica is one running gateway.
type replica struct {
	g   *Gateway
	srv *httptest.Server
	URL string
}

// stop ends the replica as a crash would for its clients: connections cut,
// NATS closed.
func (r *replica) stop() {
	r.srv.CloseClientConnections()
	r.srv.Close()
	r.g.Close()
}

// replica starts a gateway on the stack's shared settings.
func (s *liveStack) replica(mod func(*config.Gateway)) *replica {
	s.t.Helper()
	cfg := s.gw
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(s.t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		s.t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	r := &replica{g: g, srv: srv, URL: srv.URL}
	s.t.Cleanup(r.stop)
	return r
}

// post sends a JSON body and returns the status and the decoded answer.
func post(t *testing.T, url string, body any, out any) int {
	t.Helper()
	return postAs(t, "", url, body, out)
}

// postAs is post with a bearer token.
func postAs(t *testing.T, token, url string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: %d %s: %v", url, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

// sseFrame is one Server-Sent Events frame.
type sseFrame struct {
	ID, Event, Data string
}

// sseClient reads an SSE response's frames into a channel.
type sseClient struct {
	resp   *http.Response
	frames chan sseFrame
	cancel context.CancelFunc
}

// openSSE GETs url; a non-200 answer is returned as is (frames nil).
func openSSE(t *testing.T, url string, header http.Header) (*sseClient, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		return nil, resp
	}
	c := &sseClient{resp: resp, frames: make(chan sseFrame, 1024), cancel: cancel}
	t.Cleanup(c.close)
	go func() {
		defer close(c.frames)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var f sseFrame
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if f.Event != "" || f.Data != "" {
					c.frames <- f
				}
				f = sseFrame{}
			case strings.HasPrefix(line, "id: "):
				f.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				f.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				f.Data = line[6:]
			}
		}
	}()
	return c, resp
}

func (c *sseClient) close() {
	c.cancel()
	_ = c.resp.Body.Close()
}

// next returns the next frame, failing the test after d; ok is false when
// the stream ended.
func (c *sseClient) next(t *testing.T, d time.Duration) (sseFrame, bool) {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		return f, ok
	case <-time.After(d):
		t.Fatalf("no SSE frame within %s", d)
		return sseFrame{}, false
	}
}

// errorCode decodes an error envelope's code.
func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var env struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("not a JSON error envelope (%d): %s", resp.StatusCode, raw)
	}
	return env.Error.Code
}
