package client

import (
	"context"
	"fmt"

	"github.com/millrace/millrace/internal/api"
)

// Fail fails a running execution with reason (an operator's way out of an
// execution stuck on a repeating server error); 409 when it already ended.
func (c *Client) Fail(ctx context.Context, id int64, reason string) (api.Execution, error) {
	var out api.Execution
	err := c.do(ctx, "POST", fmt.Sprintf("/api/executions/%d/fail", id), api.ExecutionFailRequest{Reason: reason}, &out)
	return out, err
}
