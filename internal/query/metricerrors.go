package query

import "errors"

// The errors of the metrics layer (models and metric queries); the API
// server maps each to its code, like the ones in errors.go.
var (
	// ErrUnknownModel: a metric query's exploreName names no model of the
	// project.
	ErrUnknownModel = errors.New("unknown model")
	// ErrUnknownField: a metric query names a field id its model lacks.
	ErrUnknownField = errors.New("unknown field")
	// ErrInvalidFilter: a filter does not fit its field's type.
	ErrInvalidFilter = errors.New("invalid filter")
	// ErrInvalidModel: a model definition failed to parse or validate.
	ErrInvalidModel = errors.New("invalid model")
	// ErrModelNotFound: no model of the project has the name (reading or
	// deleting one by name).
	ErrModelNotFound = errors.New("model not found")
)
