package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
)

// waitPoll is how often a waiter re-reads the execution and its request
// when neither a callback nor a note woke it: the safety net for a note or
// callback NATS dropped.
var waitPoll = 3 * time.Second

// request is a pending execute-and-wait (or asynchronous) request, as the
// requests bucket holds it under its id (and, when a /events client made it,
// also under client.<client_id>.<request_id>, which that client watches).
type request struct {
	RequestID   string    `json:"request_id"`
	ClientID    string    `json:"client_id,omitempty"`
	Session     string    `json:"session"` // auth.Hash of the caller's token, never the token
	ExecutionID int64     `json:"execution_id,omitempty"`
	Playbook    string    `json:"playbook"`
	CreatedAt   time.Time `json:"created_at"`
	Replica     string    `json:"replica"`
	// Set once, when the request has its answer (from a callback or from
	// the execution's end, whichever came first).
	Done       bool            `json:"done,omitempty"`
	Status     string          `json:"status,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// answer is the reply of execute-and-wait: 200 when the request is done,
// 202 (status running) when the wait ran out first.
type answer struct {
	ExecutionID int64           `json:"execution_id"`
	RequestID   string          `json:"request_id"`
	Status      string          `json:"status"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
}

func (rq request) answer() answer {
	a := answer{ExecutionID: rq.ExecutionID, RequestID: rq.RequestID, Status: rq.Status, Result: rq.Result, Error: rq.Error}
	if !rq.Done {
		a.Status = string(api.ExecRunning)
	}
	return a
}

// executeBody is POST /api/execute on the gateway: the server's body plus
// how long to wait and which /events client to tell.
type executeBody struct {
	api.ExecuteRequest
	WaitSeconds *float64 `json:"wait_seconds,omitempty"`
	ClientID    string   `json:"client_id,omitempty"`
}

func clientKey(clientID, requestID string) string { return "client." + clientID + "." + requestID }

func replicaName() string {
	h, _ := os.Hostname()
	return h
}

// putRequest writes rq under its id and its client's key.
func (g *Gateway) putRequest(ctx context.Context, rq request) error {
	b, err := json.Marshal(rq)
	if err != nil {
		return err
	}
	if _, err := g.requests.Put(ctx, rq.RequestID, b); err != nil {
		return err
	}
	if rq.ClientID != "" {
		if _, err := g.requests.Put(ctx, clientKey(rq.ClientID, rq.RequestID), b); err != nil {
			return err
		}
	}
	return nil
}

// setExecution records the request's execution id, unless a callback
// answered the request first (a fast playbook): that answer stays.
func (g *Gateway) setExecution(ctx context.Context, rq request) error {
	for range 5 {
		cur, rev, ok, err := g.getRequest(ctx, rq.RequestID)
		if err != nil {
			return err
		}
		if !ok {
			return g.putRequest(ctx, rq)
		}
		cur.ExecutionID = rq.ExecutionID
		b, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		if _, err := g.requests.Update(ctx, rq.RequestID, b, rev); err != nil {
			if isWrongRevision(err) {
				continue
			}
			return err
		}
		if cur.ClientID != "" {
			_, err = g.requests.Put(ctx, clientKey(cur.ClientID, cur.RequestID), b)
		}
		return err
	}
	return errors.New("request " + rq.RequestID + " kept changing under us")
}

// getRequest reads a request; ok is false when there is none (finished
// long ago and expired, or never made).
func (g *Gateway) getRequest(ctx context.Context, id string) (request, uint64, bool, error) {
	e, err := g.requests.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return request{}, 0, false, nil
	}
	if err != nil {
		return request{}, 0, false, err
	}
	var rq request
	if err := json.Unmarshal(e.Value(), &rq); err != nil {
		return request{}, 0, false, err
	}
	return rq, e.Revision(), true, nil
}

// finishRequest records a request's answer unless it already has one, and
// returns the answer that stands. Every replica may try (the waiter, the
// replica a callback reached, an /events client's): the first one wins.
func (g *Gateway) finishRequest(ctx context.Context, id string, set func(*request)) (request, error) {
	for range 5 {
		rq, rev, ok, err := g.getRequest(ctx, id)
		if err != nil {
			return request{}, err
		}
		if !ok {
			return request{}, apierr.New(apierr.RequestNotFound, "no pending request %s: it finished, or expired after NATS_REQUEST_TTL_SECS", id)
		}
		if rq.Done {
			return rq, nil
		}
		set(&rq)
		rq.Done = true
		now := time.Now().UTC()
		rq.FinishedAt = &now
		b, err := json.Marshal(rq)
		if err != nil {
			return request{}, err
		}
		if _, err := g.requests.Update(ctx, id, b, rev); err != nil {
			if isWrongRevision(err) {
				continue // someone else changed it: read again
			}
			return request{}, err
		}
		if rq.ClientID != "" {
			if _, err := g.requests.Put(ctx, clientKey(rq.ClientID, id), b); err != nil {
				return rq, err
			}
		}
		return rq, nil
	}
	return request{}, errors.New("request " + id + " kept changing under us; retry")
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// finishFromExecution records an ended execution as its request's answer.
func finishFromExecution(ex api.Execution) func(*request) {
	return func(rq *request) {
		rq.Status = string(ex.Status)
		rq.Result = ex.Result
		rq.Error = ex.Error
	}
}

// waitFor is how long the caller asked to wait: ?wait= (a duration such as
// 30s, or seconds) or wait_seconds, capped by GATEWAY_MAX_WAIT_SECONDS.
func (g *Gateway) waitFor(r *http.Request, body executeBody) (time.Duration, error) {
	var d time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		if v, err := time.ParseDuration(s); err == nil {
			d = v
		} else if f, err := strconv.ParseFloat(s, 64); err == nil {
			d = time.Duration(f * float64(time.Second))
		} else {
			return 0, apierr.New(apierr.BadRequest, "wait=%q is not a duration: give seconds (30) or a Go duration (30s, 2m)", s)
		}
	} else if body.WaitSeconds != nil {
		d = time.Duration(*body.WaitSeconds * float64(time.Second))
	}
	if d < 0 {
		return 0, apierr.New(apierr.BadRequest, "wait must not be negative")
	}
	if max := g.cfg.MaxWait; max > 0 && d > max {
		d = max
	}
	return d, nil
}

// executeWait is POST /api/execute on the gateway: start an execution
// through the server and, with a wait, answer with its result in the same
// response (200), or 202 with status running when the wait runs out. The
// answer comes from whichever is first: a callback for the request (on any
// replica, fanned out on <callback prefix>.<request_id>), the execution's
// terminal event (a note on <updates prefix><execution_id>, then read from
// the server), or a slow poll of both.
func (g *Gateway) executeWait(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if g.cfg.MaxBodyBytes > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, int64(g.cfg.MaxBodyBytes))
	}
	var body executeBody
	if err := apierr.Decode(r.Body, &body, "MILLRACE_MAX_BODY_BYTES"); err != nil {
		writeLiveError(w, err)
		return
	}
	if body.Path == "" {
		writeLiveError(w, apierr.New(apierr.BadRequest, "path is required: the metadata.path of a registered playbook"))
		return
	}
	if body.ClientID != "" && !clientIDPattern.MatchString(body.ClientID) {
		writeLiveError(w, apierr.New(apierr.BadRequest, "client_id must be 1-64 letters, digits, '-' or '_' (the clientId /events gave you)"))
		return
	}
	wait, err := g.waitFor(r, body)
	if err != nil {
		writeLiveError(w, err)
		return
	}
	token := secretOf(r)
	rq := request{
		RequestID: newUUID(),
		ClientID:  body.ClientID,
		Session:   auth.Hash(token),
		Playbook:  body.Path,
		CreatedAt: time.Now().UTC(),
		Replica:   replicaName(),
	}

	// Subscribe before the execution exists, so that no callback can come
	// before we listen.
	callbacks := make(chan *nats.Msg, 16)
	if wait > 0 {
		sub, err := g.subscribeTo(g.callbackSubject(rq.RequestID), callbacks)
		if err != nil {
			writeLiveError(w, apierr.New(apierr.Unavailable, "subscribe to callbacks on NATS: %v; check NATS_URL", err))
			return
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	if err := g.putRequest(ctx, rq); err != nil {
		writeLiveError(w, apierr.New(apierr.Unavailable, "record the request in the %s bucket: %v; check NATS", g.cfg.RequestBucket, err))
		return
	}

	start := body.ExecuteRequest
	start.Payload = maps.Clone(body.Payload)
	if start.Payload == nil {
		start.Payload = map[string]any{}
	}
	start.Payload["request_id"] = rq.RequestID
	start.Payload["gateway_url"] = g.publicURL(r)
	var started api.Started
	if err := g.callServer(ctx, token, http.MethodPost, "/api/execute", start, &started); err != nil {
		_ = g.requests.Delete(context.WithoutCancel(ctx), rq.RequestID)
		if rq.ClientID != "" {
			_ = g.requests.Delete(context.WithoutCancel(ctx), clientKey(rq.ClientID, rq.RequestID))
		}
		writeLiveError(w, err)
		return
	}
	rq.ExecutionID = started.ExecutionID
	if err := g.setExecution(ctx, rq); err != nil {
		g.log.Warn("could not record the request's execution id; its callbacks still work", "request_id", rq.RequestID, "execution_id", rq.ExecutionID, "error", err)
	}
	if wait == 0 {
		writeLiveJSON(w, http.StatusAccepted, rq.answer())
		return
	}

	notes := make(chan *nats.Msg, 64)
	nsub, err := g.subscribeTo(g.updatesSubject(rq.ExecutionID), notes)
	if err != nil {
		g.log.Warn("could not subscribe to the execution's updates; polling only", "execution_id", rq.ExecutionID, "error", err)
	} else {
		defer func() { _ = nsub.Unsubscribe() }()
	}

	timer := time.NewTimer(wait)
	defer timer.Stop()
	poll := time.NewTicker(waitPoll)
	defer poll.Stop()
	// The execution may have ended before the subscription: look once now.
	done, final := g.checkRequest(ctx, token, rq)
	for !done {
		select {
		case <-ctx.Done():
			return // the caller left; the request stays in the bucket for /events
		case <-timer.C:
			writeLiveJSON(w, http.StatusAccepted, rq.answer())
			return
		case <-g.closing:
			// Shutting down: the caller follows up by ids (or /events).
			writeLiveJSON(w, http.StatusAccepted, rq.answer())
			return
		case m := <-callbacks:
			var cb callbackBody
			if json.Unmarshal(m.Data, &cb) != nil || cb.progress() {
				continue
			}
			// The replica that took the callback has recorded it; read what
			// stands (it may be an earlier answer).
			final, err = g.finishRequest(ctx, rq.RequestID, cb.apply)
			done = err == nil
			if err != nil {
				g.log.Warn("could not record a callback", "request_id", rq.RequestID, "error", err)
			}
		case m := <-notes:
			var n api.LiveNote
			if json.Unmarshal(m.Data, &n) == nil && terminalEvent(n.EventType) {
				done, final = g.checkRequest(ctx, token, rq)
			}
		case <-poll.C:
			done, final = g.checkRequest(ctx, token, rq)
		}
	}
	writeLiveJSON(w, http.StatusOK, final.answer())
}

// checkRequest looks whether rq has its answer: recorded in the bucket (a
// callback on another replica), or its execution ended.
func (g *Gateway) checkRequest(ctx context.Context, token string, rq request) (bool, request) {
	if cur, _, ok, err := g.getRequest(ctx, rq.RequestID); err == nil && ok && cur.Done {
		return true, cur
	}
	if rq.ExecutionID == 0 {
		return false, rq
	}
	ex, err := g.serverExecution(ctx, token, rq.ExecutionID)
	if err != nil || !ex.Status.Terminal() {
		if err != nil && ctx.Err() == nil {
			g.log.Debug("could not read a waited-for execution; retrying", "execution_id", rq.ExecutionID, "error", err)
		}
		return false, rq
	}
	final, err := g.finishRequest(ctx, rq.RequestID, finishFromExecution(ex))
	if err != nil {
		// The bucket is unreachable: the execution's end still answers.
		rq.Done = true
		finishFromExecution(ex)(&rq)
		return true, rq
	}
	return true, final
}

// terminalEvent reports whether an event ends an execution.
func terminalEvent(t string) bool {
	return t == api.EvPlaybookCompleted || t == api.EvPlaybookFailed || t == api.EvExecCancelled
}
