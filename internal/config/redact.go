package config

import (
	"net/url"
	"regexp"
	"strings"
)

// hidden replaces a password wherever a connection string is printed.
const hidden = "***"

// kvPassword finds password=... in a keyword/value connection string
// (libpq's "host=h user=u password='p w'"), quoted or not.
var kvPassword = regexp.MustCompile(`(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)`)

// RedactURL returns a connection string (a DATABASE_URL, a warehouse or
// any other URL) fit for a log line, an error or a help text: the password
// of user:password@ and any password= or sslpassword= parameter become
// ***. Everything else (scheme, user, host, database) stays, so the
// message still says where it tried to connect.
func RedactURL(s string) string {
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		// A URL too broken to parse may still hold user:password@: hide
		// everything between the scheme and the last @.
		if i, at := strings.Index(s, "://"), strings.LastIndexByte(s, '@'); i >= 0 && at > i {
			s = s[:i+3] + hidden + s[at:]
		}
		return kvPassword.ReplaceAllString(s, "${1}"+hidden)
	}
	if u.Scheme == "" || u.Opaque != "" {
		// Not a URL (a keyword/value string, or sqlite:PATH): only the
		// password parameters can carry a secret.
		return kvPassword.ReplaceAllString(s, "${1}"+hidden)
	}
	changed := false
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), hidden)
			changed = true
		}
	}
	if q := u.Query(); len(q) > 0 {
		for k := range q {
			if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
				q.Set(k, hidden)
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return s
	}
	// url.String escapes the *s of the placeholder; put them back.
	return strings.ReplaceAll(strings.ReplaceAll(u.String(), "%2A", "*"), "%2a", "*")
}
