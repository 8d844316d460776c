package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/millrace/millrace/internal/warehouse"
)

// errKeyDone stops a key query after its first row.
var errKeyDone = errors.New("key value read")

// KeyValue runs a pre-aggregate's refresh.key_sql on the warehouse and
// renders its value (the first column of the first row) as a string: ""
// for no row or NULL, a string as is, anything else as JSON. The server's
// poll and a build's report use this one rendering, so they compare equal.
func KeyValue(ctx context.Context, drv warehouse.Driver, sql string) (string, error) {
	var out string
	err := drv.Query(ctx, sql, func(cols []warehouse.Column) error {
		if len(cols) == 0 {
			return errors.New("refresh.key_sql returns no column")
		}
		return nil
	}, func(row []any) error {
		switch v := row[0].(type) {
		case nil:
		case string:
			out = v
		default:
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			out = string(b)
		}
		return errKeyDone
	})
	if err != nil && !errors.Is(err, errKeyDone) {
		return "", fmt.Errorf("refresh.key_sql: %w", err)
	}
	return out, nil
}
