package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/millrace/millrace/internal/apierr"
)

// CORS answers.
const (
	corsMethods = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
	corsHeaders = "Authorization, Content-Type, X-Session-Token, Last-Event-ID, X-Millrace-Signature"
	corsMaxAge  = "600"
)

// corsPolicy is CORS_ALLOWED_ORIGINS parsed.
type corsPolicy struct {
	any     bool // a lone *: every origin, without credentials
	origins []originPattern
}

// originPattern is scheme://host[:port]; port "*" matches any port or none.
type originPattern struct {
	scheme, host, port string
}

func parseCORS(s string) (*corsPolicy, error) {
	p := &corsPolicy{}
	for raw := range strings.SplitSeq(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if raw == "*" {
			p.any = true
			continue
		}
		o, err := parseOrigin(raw, true)
		if err != nil {
			return nil, fmt.Errorf("CORS_ALLOWED_ORIGINS entry %q: %v; want e.g. https://app.example.com or http://localhost:*", raw, err)
		}
		p.origins = append(p.origins, o)
	}
	return p, nil
}

func parseOrigin(s string, pattern bool) (originPattern, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return originPattern{}, fmt.Errorf("scheme must be http:// or https://")
	}
	if strings.ContainsAny(rest, "/?#@") {
		return originPattern{}, fmt.Errorf("an origin has no path, query or user")
	}
	host, port := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port = rest[:i], rest[i+1:]
		if port == "" || (port == "*" && !pattern) {
			return originPattern{}, fmt.Errorf("bad port")
		}
	}
	if _, err := url.Parse(scheme + "://" + host); err != nil || host == "" {
		return originPattern{}, fmt.Errorf("bad host")
	}
	return originPattern{scheme: scheme, host: strings.ToLower(host), port: port}, nil
}

// allow returns the Access-Control-Allow-Origin value for origin ("" when
// refused) and whether credentials may go with it.
func (p *corsPolicy) allow(origin string) (string, bool) {
	if origin == "" {
		return "", false
	}
	if o, err := parseOrigin(origin, false); err == nil {
		for _, want := range p.origins {
			if want.scheme == o.scheme && want.host == o.host && (want.port == "*" || want.port == o.port) {
				return origin, true
			}
		}
	}
	if p.any {
		return "*", false
	}
	return "", false
}

// withCORS puts the CORS headers on every response, errors included (set
// before h runs, so a 4xx/5xx or a proxied 502 has them too), and answers
// preflights itself: 204 for an allowed origin, 403 JSON otherwise.
func (g *Gateway) withCORS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		hdr := w.Header()
		// Always: a cache must not serve one origin's answer to another,
		// nor a no-origin answer to a browser.
		hdr.Add("Vary", "Origin")
		allowed, creds := g.cors.allow(origin)
		if allowed != "" {
			hdr.Set("Access-Control-Allow-Origin", allowed)
			if creds {
				hdr.Set("Access-Control-Allow-Credentials", "true")
			}
			hdr.Set("Access-Control-Expose-Headers", "Content-Type, Retry-After, Allow")
		}
		if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
			hdr.Add("Vary", "Access-Control-Request-Method")
			hdr.Add("Vary", "Access-Control-Request-Headers")
			if allowed == "" {
				writeErr(w, apierr.New(apierr.Forbidden, "origin %q may not call this gateway; add it to CORS_ALLOWED_ORIGINS", origin))
				return
			}
			hdr.Set("Access-Control-Allow-Methods", corsMethods)
			hdr.Set("Access-Control-Allow-Headers", corsHeaders)
			hdr.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}
