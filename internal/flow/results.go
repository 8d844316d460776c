package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// MaxInlineResult is the largest result stored inline in an event or
// command row; larger ones are stored once as a blob and referenced.
const MaxInlineResult = 64 << 10

// refPrefix marks a reference: {"$ref":"blob:<id>","size":N}.
const refPrefix = `{"$ref":"blob:`

// storeResult returns raw, or a reference to a blob holding it when raw is
// larger than MaxInlineResult.
func (s *Service) storeResult(ctx context.Context, tx store.Tx, raw json.RawMessage) (json.RawMessage, error) {
	// A result that merely looks like a reference (a tool can return any
	// JSON) is stored as a blob too, so an inline value starting with the
	// reference prefix is always one of ours: never another's blob, never
	// a dangling id.
	if inline(raw) {
		return raw, nil
	}
	id := s.ids.Next()
	if err := tx.BlobPut(ctx, id, raw, s.now()); err != nil {
		return nil, fmt.Errorf("store large result: %w", err)
	}
	return json.RawMessage(fmt.Sprintf(`%s%d","size":%d}`, refPrefix, id, len(raw))), nil
}

// inline reports whether storeResult keeps raw as it is, writing nothing.
func inline(raw json.RawMessage) bool {
	return len(raw) <= MaxInlineResult && !bytes.HasPrefix(raw, []byte(refPrefix))
}

// blobRef returns the blob id of a reference, if raw is one.
func blobRef(raw json.RawMessage) (int64, bool) {
	if !bytes.HasPrefix(raw, []byte(refPrefix)) {
		return 0, false
	}
	rest := string(raw[len(refPrefix):])
	end := strings.IndexByte(rest, '"')
	if end < 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(rest[:end], 10, 64)
	return id, err == nil
}

// LoadResult resolves a reference to the stored bytes; other values are
// returned as they are. Readers call it so references stay invisible.
func LoadResult(ctx context.Context, q store.Querier, raw json.RawMessage) (json.RawMessage, error) {
	id, ok := blobRef(raw)
	if !ok {
		return raw, nil
	}
	b, err := q.BlobGet(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load result blob %d: %w", id, err)
	}
	return b, nil
}

// decodeResult loads and decodes a stored result.
func (s *Service) decodeResult(ctx context.Context, q store.Querier, raw json.RawMessage) (any, error) {
	raw, err := LoadResult(ctx, q, raw)
	if err != nil || len(raw) == 0 {
		return nil, err
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // keep 64-bit ids exact
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// CancelCascade cancels an execution and, recursively, its running
// children (executions started by its playbook tools). It returns the
// root; children that already ended are left alone.
func (s *Service) CancelCascade(ctx context.Context, execID int64) (store.Execution, int, error) {
	root, err := s.Cancel(ctx, execID)
	if errors.Is(err, ErrExecutionEnded) {
		// The parent already ended; its running children may not have.
		root, err = store.ReadValue(ctx, s.st, func(q store.Querier) (store.Execution, error) {
			return q.ExecutionGet(ctx, execID)
		})
	}
	if err != nil {
		return root, 0, err
	}
	n := 0
	queue := []int64{execID}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		kids, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Execution, error) {
			return q.ExecutionChildren(ctx, parent)
		})
		if err != nil {
			return root, n, err
		}
		for _, k := range kids {
			queue = append(queue, k.ExecutionID)
			if k.Status != api.ExecRunning {
				continue
			}
			if _, err := s.Cancel(ctx, k.ExecutionID); err == nil {
				n++
			}
		}
	}
	return root, n, nil
}
