package apierr_test

import (
	"errors"
	goio "io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/apierr"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	type doc struct {
		A int `json:"a"`
	}
	for _, c := range []struct {
		in   string
		code apierr.Code
	}{
		{`{"a":1}`, ""},
		{``, apierr.BadJSON},
		{`{"a":1,"b":2}`, apierr.BadJSON},
		{`{"a":1} {}`, apierr.BadJSON},
		{`{"a":"x"}`, apierr.BadJSON},
		{`{"a":1` + strings.Repeat(" ", 64) + `}`, apierr.TooLarge},
	} {
		r := http.MaxBytesReader(httptest.NewRecorder(), body(c.in), 32)
		var v doc
		err := apierr.Decode(r, &v, "LIMIT_SETTING")
		var e *apierr.Error
		switch {
		case c.code == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.code != "" && (!errors.As(err, &e) || e.Code != c.code):
			t.Errorf("%q: got %v, want code %s", c.in, err, c.code)
		case c.code == apierr.TooLarge && !strings.Contains(err.Error(), "LIMIT_SETTING"):
			t.Errorf("413 does not name the setting: %v", err)
		}
	}
}

// Any body decodes or gives an error of the catalogue, never a panic or
// an error a client cannot match on.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"a":1}`, ``, `[]`, `{"a":{"b":[1,2]}}`, "\x00", `{"a":1}x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v struct {
			A any `json:"a"`
		}
		err := apierr.Decode(http.MaxBytesReader(httptest.NewRecorder(), body(s), 1<<10), &v, "X")
		var e *apierr.Error
		if err != nil && (!errors.As(err, &e) || e.Status() >= 500) {
			t.Fatalf("%q: %v is not a 4xx of the catalogue", s, err)
		}
	})
}

func body(s string) goio.ReadCloser { return goio.NopCloser(strings.NewReader(s)) }

// A NUL anywhere in a string or key is a 400 naming its path; an escaped
// backslash before u0000 is not a NUL and passes.
func TestDecodeRefusesNUL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, path string
	}{
		{`{"a":"x\u0000y"}`, "$.a"},
		{`{"a":{"b":["ok","\u0000"]}}`, "$.a.b[1]"},
		{`{"a":{"k\u0000":1}}`, "$.a: a key"},
		{`{"a":"\\u0000"}`, ""},
		{`{"a":"plain"}`, ""},
	} {
		var v struct {
			A any `json:"a"`
		}
		err := apierr.Decode(body(c.in), &v, "X")
		var e *apierr.Error
		switch {
		case c.path == "" && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.path != "" && (!errors.As(err, &e) || e.Code != apierr.NULCharacter || e.Status() != http.StatusBadRequest):
			t.Errorf("%s: got %v, want a 400 nul_character", c.in, err)
		case c.path != "" && !strings.Contains(e.Message, c.path+" "):
			t.Errorf("%s: %q does not name the path %s", c.in, e.Message, c.path)
		}
	}
}
