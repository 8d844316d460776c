package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/millrace/millrace/internal/apierr"
)

// MaxCallbackBytes caps a callback's body: a callback carries a result for
// one waiting client, not bulk data (which belongs in the execution's
// result, read from the server).
const MaxCallbackBytes = 256 << 10

// callbackBody is POST /api/internal/callback and what fans out on
// <callback prefix>.<request_id>: NoETL's shape. Status "progress" (or
// "running") is a progress report; anything else answers the request.
type callbackBody struct {
	RequestID   string          `json:"request_id"`
	ExecutionID flexID          `json:"execution_id,omitempty"`
	Step        string          `json:"step,omitempty"`
	Status      string          `json:"status,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	Error       json.RawMessage `json:"error,omitempty"` // a string or {"message": ...}
	Message     string          `json:"message,omitempty"`
	Progress    *float64        `json:"progress,omitempty"`
}

// flexID is an id sent as a number or, by a templated playbook, a string.
type flexID int64

func (f *flexID) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*f = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("execution_id must be an integer")
	}
	*f = flexID(v)
	return nil
}

func (cb callbackBody) progress() bool {
	switch strings.ToLower(cb.Status) {
	case "progress", "running", "in_progress":
		return true
	}
	return false
}

// status is the callback's status in Millrace's words: completed or failed
// for NoETL's COMPLETED/success and FAILED/error; others as sent.
func (cb callbackBody) status() string {
	s := strings.ToLower(strings.TrimSpace(cb.Status))
	switch s {
	case "", "success", "ok", "completed", "complete", "done":
		if cb.errorText() != "" {
			return "failed"
		}
		return "completed"
	case "failed", "failure", "error":
		return "failed"
	}
	return s
}

func (cb callbackBody) errorText() string {
	if len(cb.Error) == 0 || string(cb.Error) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(cb.Error, &s) == nil {
		return s
	}
	var o struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(cb.Error, &o) == nil && o.Message != "" {
		return o.Message
	}
	return string(cb.Error)
}

// apply records the callback as its request's answer.
func (cb callbackBody) apply(rq *request) {
	rq.Status = cb.status()
	rq.Result = cb.Data
	rq.Error = cb.errorText()
	if rq.Status == "failed" && rq.Error == "" {
		rq.Error = "the playbook's callback reported failure"
	}
}

// callback is POST /api/internal/callback: a playbook reports its result
// (or progress) for a request. Whichever replica it reaches records it in
// the requests bucket and fans it out on <callback prefix>.<request_id>, so
// the replica holding the waiting client answers it.
func (g *Gateway) callback(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCallbackBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeLiveError(w, apierr.New(apierr.TooLarge, "a callback may carry at most %d bytes; put bulk data in the execution's result and read it from the server", MaxCallbackBytes))
			return
		}
		writeLiveError(w, apierr.New(apierr.BadRequest, "reading the callback body: %v", err))
		return
	}
	var cb callbackBody
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&cb); err != nil {
		writeLiveError(w, apierr.New(apierr.BadJSON, "malformed callback body: %v; send {\"request_id\", \"status\", \"data\"}", err))
		return
	}
	if cb.RequestID == "" {
		writeLiveError(w, apierr.New(apierr.BadRequest, "request_id is required: the request_id the gateway put in the execution's workload"))
		return
	}
	if !requestIDPattern.MatchString(cb.RequestID) {
		writeLiveError(w, apierr.New(apierr.RequestNotFound, "no pending request %q", cb.RequestID))
		return
	}
	ctx := r.Context()
	rq, _, ok, err := g.getRequest(ctx, cb.RequestID)
	if err != nil {
		writeLiveError(w, apierr.New(apierr.Unavailable, "read the %s bucket: %v; check NATS", g.cfg.RequestBucket, err))
		return
	}
	if !ok {
		writeLiveError(w, apierr.New(apierr.RequestNotFound, "no pending request %s: it finished, or expired after NATS_REQUEST_TTL_SECS", cb.RequestID))
		return
	}
	if cb.ExecutionID != 0 && rq.ExecutionID != 0 && int64(cb.ExecutionID) != rq.ExecutionID {
		writeLiveError(w, apierr.New(apierr.BadRequest, "execution_id %d is not the execution of request %s", cb.ExecutionID, cb.RequestID))
		return
	}
	if cb.ExecutionID == 0 {
		cb.ExecutionID = flexID(rq.ExecutionID)
	}
	final := rq
	if !cb.progress() {
		// Record first: a waiter that misses the fan-out (NATS dropped it)
		// still finds the answer when it polls the bucket.
		if final, err = g.finishRequest(ctx, cb.RequestID, cb.apply); err != nil {
			writeLiveError(w, apierr.New(apierr.Unavailable, "record the callback in the %s bucket: %v; retry", g.cfg.RequestBucket, err))
			return
		}
	}
	msg, _ := json.Marshal(cb)
	if err := g.nats.NC.Publish(g.callbackSubject(cb.RequestID), msg); err != nil {
		// Recorded already: waiters find it by polling.
		g.log.Warn("could not fan out a callback; waiters will find it in the bucket", "request_id", cb.RequestID, "error", err)
	}
	writeLiveJSON(w, http.StatusOK, map[string]any{
		"request_id":   cb.RequestID,
		"execution_id": rq.ExecutionID,
		"accepted":     true,
		"status":       final.answer().Status,
	})
}
