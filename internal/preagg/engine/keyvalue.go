package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/millrace/millrace/internal/warehouse"
)

// errKeyDone stops a key query after its first row.
var errKeyDone = errors.New("key value read")

// KeyValue runs a pre-aggregate's refresh.key_sql on the warehouse and
// renders its value (the first column of the first row) as a string: ""
// for no row or NULL, else fmt.Sprint of the driver's value, as the
// server's poll (internal/builds) renders it, so the two compare equal.
func KeyValue(ctx context.Context, drv warehouse.Driver, sql string) (string, error) {
	var out string
	err := drv.Query(ctx, sql, func(cols []warehouse.Column) error {
		if len(cols) == 0 {
			return errors.New("refresh.key_sql returns no column")
		}
		return nil
	}, func(row []any) error {
		if row[0] != nil {
			out = fmt.Sprint(row[0])
		}
		return errKeyDone
	})
	if err != nil && !errors.Is(err, errKeyDone) {
		return "", fmt.Errorf("refresh.key_sql: %w", err)
	}
	return out, nil
}
