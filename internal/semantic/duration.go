package semantic

import (
	"encoding/json"
	"fmt"
	"time"
)

// String is the Go duration text ("1m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as text ("6h0m0s") so a stored model
// reads back to people; UnmarshalJSON takes that, "3d", or nanoseconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte("0"), nil
	}
	return json.Marshal(d.String())
}

// UnmarshalJSON reads text as ParseDuration does, or a number of
// nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*d = v
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("a duration is text such as \"6h\" or a number of nanoseconds, got %s", b)
	}
	*d = Duration(n)
	return nil
}
