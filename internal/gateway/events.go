package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
)

// NoETL's JSON-RPC over SSE (its gateway's src/sse.rs): the SSE event name
// is the method.
const (
	rpcProtocolVersion = "2024-11-05"
	rpcServerName      = "millrace-gateway"
	// rpcErrorCode is JSON-RPC's "server error" code NoETL uses for a
	// failed playbook.
	rpcErrorCode = -32000
	// sseKeepAlive is the SSE comment that keeps proxies from closing an
	// idle stream between pings.
	sseKeepAlive = 15 * time.Second
)

// eventsPoll is how often an /events connection re-reads its pending
// requests' executions without a wake-up (the safety net).
var eventsPoll = 10 * time.Second

type rpcFrame struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

type rpcPending struct {
	RequestID   string    `json:"requestId"`
	ExecutionID int64     `json:"executionId,omitempty"`
	Playbook    string    `json:"playbook"`
	CreatedAt   time.Time `json:"createdAt"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type rpcResult struct {
	RequestID   string          `json:"requestId"`
	ExecutionID int64           `json:"executionId"`
	Status      string          `json:"status"`
	Data        json.RawMessage `json:"data,omitempty"`
	Error       *rpcError       `json:"error,omitempty"`
}

type rpcState struct {
	ExecutionID int64     `json:"execution_id"`
	EventType   string    `json:"event_type"`
	StepName    string    `json:"step_name,omitempty"`
	Status      string    `json:"status,omitempty"`
	At          time.Time `json:"at"`
}

type rpcProgress struct {
	RequestID   string          `json:"requestId"`
	ExecutionID int64           `json:"executionId"`
	Step        string          `json:"step,omitempty"`
	Message     string          `json:"message,omitempty"`
	Progress    *float64        `json:"progress,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
}

func resultFrame(rq request) rpcResult {
	res := rpcResult{RequestID: rq.RequestID, ExecutionID: rq.ExecutionID, Status: rq.Status}
	if rq.Error != "" || rq.Status == string(api.ExecFailed) || rq.Status == string(api.ExecCancelled) {
		msg := rq.Error
		if msg == "" {
			msg = "execution " + rq.Status
		}
		res.Error = &rpcError{Code: rpcErrorCode, Message: msg}
	} else {
		res.Data = rq.Result
	}
	return res
}

// rpcStream writes JSON-RPC frames on an SSE response.
type rpcStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (s *rpcStream) send(method string, params any) error {
	if s.err != nil {
		return s.err
	}
	b, err := json.Marshal(rpcFrame{JSONRPC: "2.0", Method: method, Params: params})
	if err != nil {
		return err
	}
	if _, s.err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", method, b); s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err
}

func (s *rpcStream) comment(text string) error {
	if s.err == nil {
		if _, s.err = fmt.Fprintf(s.w, ": %s\n\n", text); s.err == nil {
			s.err = s.rc.Flush()
		}
	}
	return s.err
}

// events is GET /events: NoETL's JSON-RPC 2.0 channel over SSE. It sends
// init (with the clientId to pass to POST /api/execute as client_id, and
// the client's requests still pending), a ping every
// GATEWAY_HEARTBEAT_INTERVAL_SECS, playbook/state for every lifecycle note
// of the executions this client started (or named with ?execution_id=),
// playbook/progress for progress callbacks and playbook/result when one of
// its requests is answered. Requests live in the requests bucket, so a
// client that reconnects with its client_id (to any replica) gets the
// results that came while it was away (replayed within
// NATS_REQUEST_TTL_SECS: match them by requestId).
func (g *Gateway) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	token := secretOf(r)
	session := auth.Hash(token)
	q := r.URL.Query()
	clientID := q.Get("client_id")
	if clientID == "" {
		clientID = newUUID()
	} else if !clientIDPattern.MatchString(clientID) {
		writeLiveError(w, apierr.New(apierr.BadRequest, "client_id must be 1-64 letters, digits, '-' or '_'; leave it out to get a new one"))
		return
	}
	var watchIDs []int64
	for _, v := range q["execution_id"] {
		for part := range strings.SplitSeq(v, ",") {
			id, err := strconv.ParseInt(strings.TrimSpace(part), 10, 64)
			if err != nil || id <= 0 {
				writeLiveError(w, apierr.New(apierr.BadRequest, "execution_id %q is not an execution id", part))
				return
			}
			// Reading it checks that it exists and that the caller may see it.
			if _, err := g.serverExecution(ctx, token, id); err != nil {
				writeLiveError(w, err)
				return
			}
			watchIDs = append(watchIDs, id)
		}
	}

	watcher, err := g.requests.Watch(ctx, "client."+clientID+".>")
	if err != nil {
		writeLiveError(w, apierr.New(apierr.Unavailable, "watch the %s bucket: %v; check NATS", g.cfg.RequestBucket, err))
		return
	}
	defer func() { _ = watcher.Stop() }()
	recs := map[string]request{}
	mine := func(e jetstream.KeyValueEntry) (request, bool) {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			return request{}, false
		}
		var rq request
		if json.Unmarshal(e.Value(), &rq) != nil || rq.Session != session {
			return request{}, false // another login's request under a guessed client id
		}
		return rq, true
	}
initial:
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-watcher.Updates():
			if !ok {
				writeLiveError(w, apierr.New(apierr.Unavailable, "the %s bucket's watch ended; retry", g.cfg.RequestBucket))
				return
			}
			if e == nil {
				break initial // every current value seen
			}
			if rq, ok := mine(e); ok {
				recs[rq.RequestID] = rq
			}
		}
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := &rpcStream{w: w, rc: http.NewResponseController(w)}

	notes := make(chan *nats.Msg, 256)
	progress := make(chan *nats.Msg, 64)
	noteSubs := map[int64]*nats.Subscription{}
	progSubs := map[string]*nats.Subscription{}
	defer func() {
		for _, s := range noteSubs {
			_ = s.Unsubscribe()
		}
		for _, s := range progSubs {
			_ = s.Unsubscribe()
		}
	}()
	watchExec := func(id int64) {
		if id == 0 || noteSubs[id] != nil {
			return
		}
		s, err := g.subscribeTo(g.updatesSubject(id), notes)
		if err != nil {
			g.log.Warn("/events: could not subscribe to an execution's updates; its results come by polling", "execution_id", id, "error", err)
			return
		}
		noteSubs[id] = s
	}
	watchProgress := func(rid string) {
		if progSubs[rid] != nil {
			return
		}
		if s, err := g.subscribeTo(g.callbackSubject(rid), progress); err == nil {
			progSubs[rid] = s
		}
	}
	sent := map[string]bool{} // request ids whose result went out
	deliver := func(rq request) {
		if !rq.Done || sent[rq.RequestID] {
			return
		}
		sent[rq.RequestID] = true
		_ = out.send("playbook/result", resultFrame(rq))
	}
	// checkPending answers the pending requests whose execution ended; the
	// bucket's watch then brings the result frame.
	checkPending := func(onlyExec int64) {
		for _, rq := range recs {
			if rq.Done || (onlyExec != 0 && rq.ExecutionID != onlyExec) {
				continue
			}
			// The request's own key is the truth (the client's copy may lag).
			if cur, _, ok, err := g.getRequest(ctx, rq.RequestID); err == nil && ok && cur.Session == session {
				recs[rq.RequestID] = cur
				if cur.Done {
					deliver(cur)
					continue
				}
				rq = cur
			}
			if rq.ExecutionID == 0 {
				continue
			}
			ex, err := g.serverExecution(ctx, token, rq.ExecutionID)
			if err != nil || !ex.Status.Terminal() {
				continue
			}
			if _, err := g.finishRequest(ctx, rq.RequestID, finishFromExecution(ex)); err != nil && ctx.Err() == nil {
				g.log.Warn("/events: could not record a request's result", "request_id", rq.RequestID, "error", err)
			}
		}
	}
	for _, id := range watchIDs {
		watchExec(id)
	}
	for _, rq := range recs {
		if !rq.Done {
			watchExec(rq.ExecutionID)
			watchProgress(rq.RequestID)
		}
	}
	pending := []rpcPending{}
	for _, rq := range recs {
		if !rq.Done {
			pending = append(pending, rpcPending{RequestID: rq.RequestID, ExecutionID: rq.ExecutionID, Playbook: rq.Playbook, CreatedAt: rq.CreatedAt})
		}
	}
	if out.send("init", map[string]any{
		"protocolVersion": rpcProtocolVersion,
		"serverInfo":      map[string]string{"name": rpcServerName, "version": gatewayVersion()},
		"clientId":        clientID,
		"capabilities": map[string]any{
			"streaming": true, "callbacks": true,
			"methods": []string{"ping", "playbook/state", "playbook/progress", "playbook/result"},
		},
		"pendingRequests": pending,
	}) != nil {
		return
	}
	// Results that came while the client was away.
	for _, rq := range recs {
		deliver(rq)
	}
	// Subscribed first, then looked: an execution that ended before the
	// subscription is answered now.
	checkPending(0)

	heartbeat := g.cfg.Heartbeat
	if heartbeat <= 0 {
		heartbeat = 30 * time.Second
	}
	ping := time.NewTicker(heartbeat)
	defer ping.Stop()
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	poll := time.NewTicker(eventsPoll)
	defer poll.Stop()
	for out.err == nil {
		select {
		case <-ctx.Done():
			return
		case <-g.closing:
			return // the client reconnects, to another replica if need be
		case <-ping.C:
			_ = out.send("ping", map[string]any{"timestamp": time.Now().UTC()})
		case <-keep.C:
			_ = out.comment("keep-alive")
		case <-poll.C:
			checkPending(0)
		case e, ok := <-watcher.Updates():
			if !ok {
				return // the bucket went away; the client reconnects
			}
			rq, ok := mine(e)
			if !ok {
				continue
			}
			recs[rq.RequestID] = rq
			if rq.Done {
				deliver(rq)
				if s := progSubs[rq.RequestID]; s != nil {
					_ = s.Unsubscribe()
					delete(progSubs, rq.RequestID)
				}
				continue
			}
			watchProgress(rq.RequestID)
			if rq.ExecutionID != 0 && noteSubs[rq.ExecutionID] == nil {
				watchExec(rq.ExecutionID)
				checkPending(rq.ExecutionID)
			}
		case m := <-notes:
			var n api.LiveNote
			if json.Unmarshal(m.Data, &n) != nil {
				continue
			}
			_ = out.send("playbook/state", rpcState{ExecutionID: n.ExecutionID, EventType: n.EventType, StepName: n.Step, Status: n.Status, At: n.At})
			if terminalEvent(n.EventType) {
				checkPending(n.ExecutionID)
			}
		case m := <-progress:
			var cb callbackBody
			if json.Unmarshal(m.Data, &cb) != nil || !cb.progress() {
				continue
			}
			_ = out.send("playbook/progress", rpcProgress{RequestID: cb.RequestID, ExecutionID: int64(cb.ExecutionID), Step: cb.Step, Message: cb.Message, Progress: cb.Progress, Data: cb.Data})
		}
	}
}
