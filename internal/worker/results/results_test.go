package results

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/warehouse"
)

// recorder is the server side of the upload: it keeps each request's lines
// and answers with status.
type recorder struct {
	mu       sync.Mutex
	requests []string // "uuid worker"
	lines    [][]string
	status   int
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var lines []string
	sc := bufio.NewScanner(req.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	r.mu.Lock()
	r.requests = append(r.requests, req.URL.Path+" "+req.URL.Query().Get("worker_id"))
	r.lines = append(r.lines, lines)
	status := r.status
	r.mu.Unlock()
	if status == 0 {
		status = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error": {"code": "test", "message": "refused by the test"}}`))
}

func setup(t *testing.T, status int) (*recorder, *client.Client) {
	rec := &recorder{status: status}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	return rec, client.New(srv.URL)
}

func TestUploadStreamsHeaderThenRows(t *testing.T) {
	t.Parallel()
	rec, c := setup(t, 0)
	err := Upload(t.Context(), c, "q1", "w1", func(_ context.Context, cols func([]warehouse.Column) error, row func([]any) error) error {
		if err := cols([]warehouse.Column{{Name: "a", Type: "number"}, {Name: "b", Type: "string"}}); err != nil {
			return err
		}
		for i := range 3 {
			if err := row([]any{i, "x"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.requests) != 1 || rec.requests[0] != "/api/v2/internal/queries/q1/results w1" {
		t.Fatalf("requests = %v", rec.requests)
	}
	want := []string{`{"columns":[{"name":"a","type":"number"},{"name":"b","type":"string"}]}`, `[0,"x"]`, `[1,"x"]`, `[2,"x"]`}
	if got := rec.lines[0]; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines = %q, want %q", got, want)
	}
}

func TestUploadOfNoResultSetSendsAnEmptyHeader(t *testing.T) {
	t.Parallel()
	rec, c := setup(t, 0)
	if err := Upload(t.Context(), c, "q2", "w", func(context.Context, func([]warehouse.Column) error, func([]any) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(rec.lines) != 1 || len(rec.lines[0]) != 1 || rec.lines[0][0] != `{"columns":[]}` {
		t.Fatalf("lines = %q", rec.lines)
	}
}

// A producer that fails before its columns opens no upload, and its error
// comes back as it was (the pre-aggregate worker tells a lost object by it).
func TestUploadFailingEarlySendsNothing(t *testing.T) {
	t.Parallel()
	rec, c := setup(t, 0)
	sentinel := errors.New("object gone")
	err := Upload(t.Context(), c, "q3", "w", func(context.Context, func([]warehouse.Column) error, func([]any) error) error {
		return sentinel
	})
	if err != sentinel {
		t.Fatalf("err = %v, want the producer's own", err)
	}
	if len(rec.requests) != 0 {
		t.Fatalf("requests = %v, want none", rec.requests)
	}
}

// A producer failing mid-stream aborts the upload: the server never sees a
// complete result (its last line is not the producer's last row).
func TestUploadFailingMidStreamAborts(t *testing.T) {
	t.Parallel()
	_, c := setup(t, 0)
	sentinel := errors.New("warehouse died")
	err := Upload(t.Context(), c, "q4", "w", func(_ context.Context, cols func([]warehouse.Column) error, row func([]any) error) error {
		_ = cols([]warehouse.Column{{Name: "a", Type: "number"}})
		_ = row([]any{1})
		return sentinel
	})
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want the producer's", err)
	}
}

func TestUploadServerAnswers(t *testing.T) {
	t.Parallel()
	produce := func(_ context.Context, cols func([]warehouse.Column) error, row func([]any) error) error {
		if err := cols([]warehouse.Column{{Name: "a", Type: "number"}}); err != nil {
			return err
		}
		return row([]any{json.Number("1")})
	}
	// 409: the query was cancelled or re-queued meanwhile; another outcome
	// stands, so the upload is not this worker's failure.
	_, c := setup(t, http.StatusConflict)
	if err := Upload(t.Context(), c, "q5", "w", produce); err != nil {
		t.Fatalf("409: err = %v, want nil", err)
	}
	_, c = setup(t, http.StatusInternalServerError)
	err := Upload(t.Context(), c, "q6", "w", produce)
	if client.StatusOf(err) != http.StatusInternalServerError || !strings.Contains(err.Error(), "upload results") {
		t.Fatalf("500: err = %v", err)
	}
}
