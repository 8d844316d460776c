package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/server/servertest"
)

// With the server's auth on: execute-and-wait needs an operator (a viewer
// gets 403, no token 401) and runs as the caller; streams take the token
// from ?session_token= too; /events shows a client's requests only to the
// token that made them, whatever client id another caller guesses.
func TestLiveRoutesWithAuth(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, true, servertest.WithAuth())
	s.register(plain, sleepy)
	a := s.replica(nil)
	operator, viewer := s.Token(t, api.RoleOperator), s.Token(t, api.RoleViewer)

	var env struct{ Error struct{ Code string } }
	if code := postAs(t, viewer, a.URL+"/api/execute?wait=5s", map[string]any{"path": "gw/plain"}, &env); code != http.StatusForbidden || env.Error.Code != "forbidden" {
		t.Fatalf("viewer execute: %d %+v", code, env)
	}
	if code := post(t, a.URL+"/api/execute?wait=5s", map[string]any{"path": "gw/plain"}, &env); code != http.StatusUnauthorized || env.Error.Code != "unauthenticated" {
		t.Fatalf("execute without a token: %d %+v", code, env)
	}
	var ans answer
	if code := postAs(t, operator, a.URL+"/api/execute?wait=60s", map[string]any{"path": "gw/plain"}, &ans); code != http.StatusOK || ans.Status != "completed" {
		t.Fatalf("operator execute-and-wait: %d %+v", code, ans)
	}

	// A viewer streams it with the token in the query (EventSource).
	c, resp := openSSE(t, fmt.Sprintf("%s/api/executions/%d/stream?session_token=%s", a.URL, ans.ExecutionID, viewer), nil)
	if c == nil {
		t.Fatalf("viewer stream: %d", resp.StatusCode)
	}
	if _, _, ended := eventIDs(t, c, 0); !ended {
		t.Fatal("the stream of an ended execution did not end")
	}
	if _, resp := openSSE(t, fmt.Sprintf("%s/api/executions/%d/stream", a.URL, ans.ExecutionID), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without a token: %d", resp.StatusCode)
	}

	// The operator's pending request is invisible to the viewer using the
	// operator's client id, and visible to the operator.
	clientID := "shared-client"
	var slow answer
	if code := postAs(t, operator, a.URL+"/api/execute", map[string]any{"path": "gw/sleepy", "client_id": clientID}, &slow); code != http.StatusAccepted {
		t.Fatalf("async execute: %d %+v", code, slow)
	}
	pendingOf := func(token string) []rpcPending {
		ev, resp := openSSE(t, a.URL+"/events?client_id="+clientID, http.Header{"Authorization": {"Bearer " + token}})
		if ev == nil {
			t.Fatalf("/events: %d", resp.StatusCode)
		}
		defer ev.close()
		f, _ := ev.next(t, 10*time.Second)
		var init struct {
			PendingRequests []rpcPending `json:"pendingRequests"`
		}
		if err := json.Unmarshal(rpcOf(t, f).Params, &init); err != nil || f.Event != "init" {
			t.Fatalf("init: %+v %v", f, err)
		}
		return init.PendingRequests
	}
	if p := pendingOf(viewer); len(p) != 0 {
		t.Fatalf("the viewer sees the operator's requests: %+v", p)
	}
	if p := pendingOf(operator); len(p) != 1 || p[0].RequestID != slow.RequestID || p[0].ExecutionID != slow.ExecutionID {
		t.Fatalf("the operator's pending requests: %+v (want %s)", p, slow.RequestID)
	}
}
