// Package errkind lets a domain package (flow, query) return an error that
// matches one of its sentinel kinds with errors.Is yet reads as a message
// of its own, without the kind's text in front as fmt.Errorf("%w: …")
// would put it. The HTTP layer maps the kinds to API codes; the domain
// packages know nothing of HTTP.
package errkind

import (
	"errors"
	"fmt"
)

// Errorf returns an error that matches kind (errors.Is) and reads as the
// formatted message.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Is reports whether err (or an error it wraps) was made by Errorf: a
// refusal its caller can act on, not a failure of the process or its store.
func Is(err error) bool {
	var k *kindError
	return errors.As(err, &k)
}
