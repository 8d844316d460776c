package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
)

// ProxyPrefix is where the gateway serves the server's API: /noetl/{path}
// goes to the server's /api/{path} (NoETL's gateway path).
const ProxyPrefix = "/noetl/"

// readerWrites are the writes a viewer may make: structured, read-only
// metric queries (dashboards). The server holds the exact route × role
// matrix; the gateway only keeps a viewer's other writes from reaching it.
var readerWrites = []string{"/query/metric-query"}

func (g *Gateway) proxyRoutes() {
	g.handle("/noetl/{path...}", g.proxy)
}

// proxy enforces the role coarsely, reads by readers and writes by
// operators (workers pass; the server decides for them), then forwards.
func (g *Gateway) proxy(w http.ResponseWriter, r *http.Request) {
	access := auth.OperatorsAndWorkers
	switch {
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		access = auth.ReadersAndWorkers
	case r.Method == http.MethodPost && hasAnySuffix(r.URL.Path, readerWrites):
		access = auth.ReadersAndWorkers
	}
	g.authed(access, g.forward)(w, r)
}

func hasAnySuffix(s string, suffixes []string) bool {
	for _, x := range suffixes {
		if strings.HasSuffix(s, x) {
			return true
		}
	}
	return false
}

// isStream reports whether r asks for a stream (SSE), which has no
// ProxyTimeout and ends when the gateway shuts down instead.
func isStream(r *http.Request) bool {
	return strings.HasSuffix(r.URL.Path, "/stream") || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// limitedBody is a request body that fails past limit and remembers it,
// so that a proxied body too large gets 413, not 502.
type limitedBody struct {
	io.ReadCloser
	left int64
	over bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, _ := b.ReadCloser.Read(one[:]); n > 0 {
			b.over = true
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

var errTooLarge = errors.New("request body too large")

// forward sends the request to the server's /api/{path}, with the caller's
// token as Bearer (never its cookie), streaming both ways.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request) {
	c, _ := callerFrom(r.Context())
	limit := int64(g.cfg.MaxBodyBytes)
	if r.ContentLength > limit {
		g.metrics.proxy.WithLabelValues("too_large").Inc()
		writeErr(w, tooLarge(limit))
		return
	}
	var body *limitedBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &limitedBody{ReadCloser: r.Body, left: limit}
		r.Body = body
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if isStream(r) {
		ctx, cancel = context.WithCancel(r.Context())
		go func() {
			select {
			case <-g.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
	} else {
		ctx, cancel = context.WithTimeout(r.Context(), ProxyTimeout)
	}
	defer cancel()
	target := *g.server
	target.RawPath = strings.TrimRight(g.server.EscapedPath(), "/") + "/api" + strings.TrimPrefix(r.URL.EscapedPath(), "/noetl")
	p, err := url.PathUnescape(target.RawPath)
	if err != nil {
		writeErr(w, apierr.New(apierr.BadRequest, "path %q: %v", r.URL.EscapedPath(), err))
		return
	}
	target.Path, target.RawQuery = p, r.URL.RawQuery
	rp := &httputil.ReverseProxy{
		Transport: g.upstream.Transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = &target
			pr.Out.Host = ""
			pr.SetXForwarded()
			h := pr.Out.Header
			h.Del("Authorization")
			h.Del("X-Session-Token")
			h.Del("Cookie")
			if c.secret != "" {
				h.Set("Authorization", "Bearer "+c.secret)
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			// The gateway's CORS headers are already set; the server's
			// would make a second, conflicting copy.
			for k := range resp.Header {
				if strings.HasPrefix(k, "Access-Control-") {
					resp.Header.Del(k)
				}
			}
			g.metrics.proxy.WithLabelValues("ok").Inc()
			if resp.StatusCode == http.StatusUnauthorized && c.secret != "" {
				// The server no longer takes a token the gateway had
				// cached (revoked, or ended elsewhere): forget it on every
				// replica now rather than at the cache's TTL.
				if err := g.sessions.Purge(resp.Request.Context(), auth.Hash(c.secret)); err != nil {
					g.log.Warn("drop a token the server refused from the sessions bucket", "error", err)
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if body != nil && body.over {
				g.metrics.proxy.WithLabelValues("too_large").Inc()
				writeErr(w, tooLarge(limit))
				return
			}
			if r.Context().Err() != nil && errors.Is(r.Context().Err(), context.Canceled) {
				return // the client went away, or the gateway is shutting down
			}
			g.metrics.proxy.WithLabelValues("upstream_error").Inc()
			g.log.Warn("proxy to the server failed", "method", r.Method, "path", r.URL.Path, "server", g.server.String(), "error", err)
			writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the gateway could not reach the server at %s: %v; retry shortly", g.server, err))
		},
	}
	rp.ServeHTTP(w, r.WithContext(ctx))
}
