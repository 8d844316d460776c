package apierr

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// Decode reads a JSON request body into v strictly: unknown fields,
// trailing data, an empty body and a body over its http.MaxBytesReader
// limit are errors of this catalogue, which a client can act on. setting
// names what sets the limit, for the 413's message.
func Decode(body io.Reader, v any, setting string) error {
	dec := json.NewDecoder(body)
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
	return nil
}
