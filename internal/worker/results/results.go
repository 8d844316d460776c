// Package results streams a query's result from a worker to the server:
// the NDJSON the server ingests (warehouse.ResultHeader, then one JSON array
// per row), written as the rows are produced, through one upload request.
// The warehouse worker (rows from the warehouse) and the pre-aggregate
// worker (rows from DuckDB over a materialization) both use it.
package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/warehouse"
)

// Producer emits a result: its columns once (or never, for a statement
// with no result set), then each row, as warehouse.Driver's Query does.
type Producer func(ctx context.Context, onColumns func([]warehouse.Column) error, onRow func([]any) error) error

// Upload runs produce and streams what it emits to the server as query
// uuid's result, uploaded by worker. The upload starts with the first
// line, so a producer that fails before any output sends nothing and its
// error comes back unchanged (errors.Is works on it). A 409 from the server
// (the query was cancelled or re-queued meanwhile) is not an error: another
// outcome stands.
func Upload(ctx context.Context, api *client.Client, uuid, worker string, produce Producer) error {
	pr, pw := io.Pipe()
	var upload chan error
	start := func() {
		if upload == nil {
			upload = make(chan error, 1)
			go func() {
				err := api.QueryUpload(ctx, uuid, worker, pr)
				// A refused upload ends the producer's next write (the
				// transport closes the body too; this names why).
				pr.CloseWithError(errUploadEnded)
				upload <- err
			}()
		}
	}
	enc := json.NewEncoder(pw)
	header := false
	perr := produce(ctx, func(cols []warehouse.Column) error {
		header = true
		start()
		return enc.Encode(warehouse.ResultHeader{Columns: cols})
	}, func(row []any) error {
		if !header { // a producer must name its columns first; be lenient
			header = true
			start()
			if err := enc.Encode(warehouse.ResultHeader{Columns: []warehouse.Column{}}); err != nil {
				return err
			}
		}
		return enc.Encode(row)
	})
	if perr == nil && !header {
		start()
		perr = enc.Encode(warehouse.ResultHeader{Columns: []warehouse.Column{}})
	}
	if perr != nil {
		if upload == nil {
			return perr
		}
		pw.CloseWithError(perr)
		uerr := <-upload
		if uerr != nil && (errors.Is(perr, errUploadEnded) || errors.Is(perr, io.ErrClosedPipe)) {
			// The server refused or dropped the upload mid-stream: that,
			// not the broken pipe it caused, is the story (a 409 too: the
			// caller's failure report then learns the query is not ours).
			return fmt.Errorf("upload results: %w", uerr)
		}
		return perr
	}
	pw.Close()
	return uploadErr(<-upload)
}

var errUploadEnded = errors.New("the result upload ended")

func uploadErr(err error) error {
	if err == nil || client.StatusOf(err) == http.StatusConflict {
		return nil
	}
	return fmt.Errorf("upload results: %w", err)
}
