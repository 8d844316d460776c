package apierr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
)

// Decode reads a JSON request body into v strictly: unknown fields,
// trailing data, an empty body, a body over its http.MaxBytesReader limit
// and a string holding a NUL character are errors of this catalogue, which
// a client can act on. setting names what sets the limit, for the 413's
// message.
func Decode(body io.Reader, v any, setting string) error {
	var raw bytes.Buffer
	dec := json.NewDecoder(io.TeeReader(body, &raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return New(TooLarge, "request body exceeds %d bytes (%s)", tooBig.Limit, setting)
		case errors.Is(err, io.EOF):
			return New(BadJSON, "request body is empty; send a JSON object")
		default:
			return New(BadJSON, "malformed JSON body: %v", err)
		}
	}
	if dec.More() {
		return New(BadJSON, "malformed JSON body: unexpected data after the JSON object")
	}
	return CheckNUL(raw.Bytes())
}

// nulEscape is how JSON writes a NUL character; a raw NUL byte is not valid
// JSON and never decodes.
var nulEscape = []byte(`\u0000`)

// CheckNUL refuses JSON text with a NUL character in any string or key:
// PostgreSQL can hold NUL in neither text nor jsonb, and would answer a
// write with an internal error. The scan is a byte search; only a body
// that holds the escape is decoded again to name the path.
func CheckNUL(raw []byte) error {
	if !bytes.Contains(raw, nulEscape) {
		return nil
	}
	var doc any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&doc) != nil {
		return nil // the caller's own decode judged the syntax
	}
	if path, ok := findNUL(doc, "$"); ok {
		return New(NULCharacter, "%s holds a NUL character (\\u0000), which the event store cannot keep; remove it or encode the data (e.g. base64)", path)
	}
	return nil // only an escaped backslash followed by u0000
}

// findNUL is the JSON path of the first string or key holding a NUL, in a
// stable order.
func findNUL(v any, path string) (string, bool) {
	switch t := v.(type) {
	case string:
		return path, strings.IndexByte(t, 0) >= 0
	case []any:
		for i, e := range t {
			if p, ok := findNUL(e, fmt.Sprintf("%s[%d]", path, i)); ok {
				return p, true
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if strings.IndexByte(k, 0) >= 0 {
				return fmt.Sprintf("%s: a key", path), true
			}
			if p, ok := findNUL(t[k], path+"."+k); ok {
				return p, true
			}
		}
	}
	return "", false
}
