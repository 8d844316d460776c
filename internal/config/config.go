// Package config owns Millrace's settings. Every setting is an environment
// variable with a default and a matching command-line flag; a flag beats the
// environment, which beats the default. The same table renders
// docs/configuration.md, so the documentation cannot drift from the code.
package config

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/millrace/millrace/internal/bus"
)

// Setting describes one variable.
type Setting struct {
	Env     string
	Flag    string
	Default string
	Help    string
	Roles   []string // commands that read it
	set     func(string) error
	kind    string
}

// Set is an ordered collection of settings bound to Go variables.
type Set struct {
	list []*Setting
}

func (s *Set) add(st *Setting) {
	s.list = append(s.list, st)
}

// String binds a string setting.
func (s *Set) String(p *string, env, flag, def, help string, roles ...string) {
	*p = def
	s.add(&Setting{Env: env, Flag: flag, Default: def, Help: help, Roles: roles, kind: "string",
		set: func(v string) error { *p = v; return nil }})
}

// Choice binds a string setting that must be one of choices; any other
// value is refused when the environment or the flag is read.
func (s *Set) Choice(p *string, env, flag, def string, choices []string, help string, roles ...string) {
	*p = def
	s.add(&Setting{Env: env, Flag: flag, Default: def, Help: help, Roles: roles, kind: "string",
		set: func(v string) error {
			v = strings.TrimSpace(v)
			if !slices.Contains(choices, v) {
				return fmt.Errorf("want %s, got %q", strings.Join(choices, " or "), v)
			}
			*p = v
			return nil
		}})
}

// Int binds an integer setting.
func (s *Set) Int(p *int, env, flag string, def int, help string, roles ...string) {
	*p = def
	s.add(&Setting{Env: env, Flag: flag, Default: strconv.Itoa(def), Help: help, Roles: roles, kind: "int",
		set: func(v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("want an integer, got %q", v)
			}
			*p = n
			return nil
		}})
}

// Seconds binds a duration given as a whole number of seconds (the seeds'
// NOETL_WORKER_NATS_* convention). A Go duration string ("1500ms") is also
// accepted so tests can go below a second.
func (s *Set) Seconds(p *time.Duration, env, flag string, def time.Duration, help string, roles ...string) {
	*p = def
	s.add(&Setting{Env: env, Flag: flag, Default: strconv.Itoa(int(def / time.Second)), Help: help, Roles: roles, kind: "seconds",
		set: func(v string) error {
			v = strings.TrimSpace(v)
			if n, err := strconv.ParseFloat(v, 64); err == nil {
				*p = time.Duration(n * float64(time.Second))
				return nil
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("want seconds (e.g. 30) or a duration (e.g. 1500ms), got %q", v)
			}
			*p = d
			return nil
		}})
}

// Duration binds a duration written as Go writes one ("720h", "90m"),
// or in days ("30d"); "0" turns the feature it sets off.
func (s *Set) Duration(p *time.Duration, env, flag string, def time.Duration, help string, roles ...string) {
	*p = def
	s.add(&Setting{Env: env, Flag: flag, Default: FormatDuration(def), Help: help, Roles: roles, kind: "duration",
		set: func(v string) error {
			d, err := ParseDuration(v)
			if err != nil {
				return err
			}
			*p = d
			return nil
		}})
}

// ParseDuration reads a Duration setting's value.
func ParseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "0" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("want a duration like 30d, 720h or 0 (off), got %q", v)
		}
		return time.Duration(n * 24 * float64(time.Hour)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration like 30d, 720h or 0 (off), got %q", v)
	}
	return d, nil
}

// FormatDuration writes d as ParseDuration reads it: whole days as "30d".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}

// Millis binds a duration given in milliseconds (Lightdash's *_MS
// convention).
func (s *Set) Millis(p *time.Duration, env, flag string, def time.Duration, help string, roles ...string) {
	*p = def
	s.add(&Setting{Env: env, Flag: flag, Default: strconv.Itoa(int(def / time.Millisecond)), Help: help, Roles: roles, kind: "millis",
		set: func(v string) error {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || n < 0 {
				return fmt.Errorf("want milliseconds (e.g. 180000), got %q", v)
			}
			*p = time.Duration(n * float64(time.Millisecond))
			return nil
		}})
}

// Bool binds a boolean setting.
func (s *Set) Bool(p *bool, env, flag string, def bool, help string, roles ...string) {
	*p = def
	s.add(&Setting{Env: env, Flag: flag, Default: strconv.FormatBool(def), Help: help, Roles: roles, kind: "bool",
		set: func(v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			*p = b
			return nil
		}})
}

// flagValue adapts a Setting to pflag.Value.
type flagValue struct {
	st  *Setting
	cur string
}

func (f *flagValue) String() string { return f.cur }
func (f *flagValue) Set(v string) error {
	if err := f.st.set(v); err != nil {
		return fmt.Errorf("%s: %w", f.st.Flag, err)
	}
	f.cur = v
	return nil
}
func (f *flagValue) Type() string { return f.st.kind }

// Bind registers every setting as a flag and applies the environment. It
// returns an error naming the variable when an environment value is bad.
func (s *Set) Bind(fs *pflag.FlagSet) error {
	for _, st := range s.list {
		cur := st.Default
		if v, ok := os.LookupEnv(st.Env); ok {
			if err := st.set(v); err != nil {
				return fmt.Errorf("environment variable %s: %w", st.Env, err)
			}
			cur = v
		}
		fv := &flagValue{st: st, cur: cur}
		fs.Var(fv, st.Flag, fmt.Sprintf("%s [$%s]", st.Help, st.Env))
		if st.kind == "bool" {
			fs.Lookup(st.Flag).NoOptDefVal = "true"
		}
		if cur != "" {
			fs.Lookup(st.Flag).DefValue = redact(st.Env, cur)
		}
	}
	return nil
}

func redact(env, v string) string {
	if strings.Contains(env, "PASSWORD") || strings.Contains(env, "SECRET") || strings.Contains(env, "TOKEN") {
		return "****"
	}
	if env == "NATS_URL" {
		return bus.Redact(v) // may carry user:pass@ or token@
	}
	if strings.HasSuffix(env, "_URL") || strings.HasSuffix(env, "_DSN") {
		return RedactURL(v) // DATABASE_URL and friends: user:password@
	}
	return v
}

// Settings returns the settings in declaration order.
func (s *Set) Settings() []*Setting { return s.list }

// Markdown renders a reference table of every setting across sets,
// de-duplicated by environment variable.
func Markdown(sets map[string]*Set) string {
	type row struct {
		st    *Setting
		roles map[string]bool
	}
	rows := map[string]*row{}
	var order []string
	names := make([]string, 0, len(sets))
	for name := range sets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, st := range sets[name].list {
			// One row per meaning: a variable that means something different
			// to different roles (SERVER_API_URL) gets a row each.
			key := st.Env + "\x00" + st.Default + "\x00" + st.Help
			r, ok := rows[key]
			if !ok {
				r = &row{st: st, roles: map[string]bool{}}
				rows[key] = r
				order = append(order, key)
			}
			r.roles[name] = true
		}
	}
	var b strings.Builder
	b.WriteString("| Variable | Flag | Default | Used by | Meaning |\n|---|---|---|---|---|\n")
	for _, key := range order {
		r := rows[key]
		env := r.st.Env
		var roles []string
		for k := range r.roles {
			roles = append(roles, k)
		}
		sort.Strings(roles)
		def := r.st.Default
		if def == "" {
			def = "(empty)"
		}
		switch r.st.kind {
		case "seconds":
			def += " s"
		case "millis":
			def += " ms"
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | `%s` | %s | %s |\n", env, r.st.Flag, def, strings.Join(roles, ", "), r.st.Help)
	}
	return b.String()
}
