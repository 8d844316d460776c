// Package ui is Millrace's web UI: static pages and scripts embedded in the
// binary (no build step), served under /ui/ by the server and the gateway.
//
// The pages are plain ES modules. They learn where the API is from
// /ui/config.json, so one set of files works on the server (/api) and
// behind the gateway (/noetl).
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Config is what the pages are told, as /ui/config.json.
type Config struct {
	// APIBase is where the API answers: "/api" on the server, "/noetl"
	// through the gateway.
	APIBase string `json:"api_base"`
	// EventsBase is where the Server-Sent Event streams are (executions/{id}/stream
	// and stream); APIBase when empty.
	EventsBase string `json:"events_base"`
	// AuthBase is where login, logout, whoami and the auth config answer:
	// APIBase + "/auth" when empty. The gateway answers them itself at
	// /api/auth, outside its /noetl proxy.
	AuthBase string `json:"auth_base"`
	// Title names the deployment in the page header; "Millrace" when empty.
	Title string `json:"title"`
	// OIDCIssuer is the OIDC issuer's URL (OIDC_ISSUER_URL), if any: the
	// login page reads its discovery document, so the page's
	// Content-Security-Policy lets it connect there.
	OIDCIssuer string `json:"oidc_issuer,omitempty"`
}

// Prefix is where the UI is mounted.
const Prefix = "/ui/"

type file struct {
	body  []byte
	etag  string
	ctype string
}

// Handler serves the UI's files under /ui/ and cfg as /ui/config.json.
// Unknown paths under /ui/ get index.html: the pages route by the URL's
// fragment, so only a mistyped path lands there, and it shows the app.
func Handler(cfg Config) http.Handler {
	if cfg.APIBase == "" {
		cfg.APIBase = "/api"
	}
	cfg.APIBase = strings.TrimRight(cfg.APIBase, "/")
	if cfg.EventsBase == "" {
		cfg.EventsBase = cfg.APIBase
	}
	if cfg.AuthBase == "" {
		cfg.AuthBase = cfg.APIBase + "/auth"
	}
	cfg.AuthBase = strings.TrimRight(cfg.AuthBase, "/")
	if cfg.Title == "" {
		cfg.Title = "Millrace"
	}
	files := map[string]file{}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed directive guarantees it
	}
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		files[p] = newFile(p, b)
		return nil
	})
	connect := "'self'"
	if u, err := url.Parse(cfg.OIDCIssuer); err == nil && u.Scheme != "" && u.Host != "" {
		connect += " " + u.Scheme + "://" + u.Host
	}
	csp := "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src " + connect +
		"; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	conf, _ := json.Marshal(cfg)
	files["config.json"] = newFile("config.json", conf)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the UI only answers GET", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(Prefix, "/"))), "/")
		f, ok := files[name]
		if !ok && path.Ext(name) != "" {
			http.Error(w, "no such file in the UI: "+name, http.StatusNotFound)
			return
		}
		if !ok {
			f = files["index.html"]
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		// Revalidate every time: the ETag makes that a 304, and a new
		// binary's files are never mixed with an old cached page.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", csp)
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	})
}

func newFile(name string, b []byte) file {
	sum := sha256.Sum256(b)
	ct := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js", ".mjs":
		ct = "text/javascript; charset=utf-8"
	case ".json":
		ct = "application/json"
	case "":
		ct = "application/octet-stream"
	}
	return file{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: ct}
}
