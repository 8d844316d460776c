package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// wantNotYours checks that err is the 403 claim_not_yours refusal.
func wantNotYours(t *testing.T, what string, err error) {
	t.Helper()
	if client.StatusOf(err) != 403 || apiCode(err) != "claim_not_yours" {
		t.Fatalf("%s: %v, want 403 claim_not_yours", what, err)
	}
}

// issued waits for the command.issued event of step in execution id.
func issued(t *testing.T, c *client.Client, id int64, step string) api.Event {
	t.Helper()
	var cmd api.Event
	wait.For(t, 10*time.Second, func() error {
		evs, err := c.Events(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.EventType == api.EvCommandIssued && e.Step == step {
				cmd = e
				return nil
			}
		}
		return fmt.Errorf("no command.issued for step %s yet", step)
	})
	return cmd
}

// A worker token other than the one that claimed a command cannot report
// on it in the holder's name: not its completion, start, heartbeat or
// release, alone or in a batch (only that item is refused). The holder
// keeps its lease and its real report is accepted afterwards.
func TestClaimNotYoursCommand(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, servertest.WithAuth())
	ctx := t.Context()
	url := h.Srv.URL()
	op := client.New(url).WithToken(h.Token(t, api.RoleOperator))
	a := client.New(url).WithToken(h.Token(t, api.RoleWorker))
	b := client.New(url).WithToken(h.Token(t, api.RoleWorker))
	if _, err := op.Register(ctx, twoSteps); err != nil {
		t.Fatal(err)
	}
	st, err := op.Execute(ctx, "t/two", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := op.Execute(ctx, "t/two", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := issued(t, a, st.ExecutionID, "start")
	cmdB := issued(t, b, other.ExecutionID, "start")

	cl, err := a.Claim(ctx, cmd.EventID, "wA")
	if err != nil || cl.Attempt != 1 {
		t.Fatalf("claim by A = %+v, %v", cl, err)
	}
	if _, err := b.Claim(ctx, cmdB.EventID, "wB"); err != nil {
		t.Fatal(err)
	}
	before, err := a.Command(ctx, cmd.EventID)
	if err != nil {
		t.Fatal(err)
	}

	// B, with A's worker_id and attempt, which anyone who can read the
	// command knows.
	forged := api.Report{EventType: api.EvCommandCompleted, EventID: cmd.EventID, WorkerID: "wA", Attempt: 1, Result: json.RawMessage(`{"forged":true}`)}
	_, err = b.Report(ctx, forged)
	wantNotYours(t, "B's command.completed in A's name", err)
	for _, typ := range []string{api.EvCommandStarted, api.EvCommandHeartbeat, api.EvCommandFailed} {
		_, err = b.Report(ctx, api.Report{EventType: typ, EventID: cmd.EventID, WorkerID: "wA", Attempt: 1})
		wantNotYours(t, "B's "+typ+" in A's name", err)
	}
	wantNotYours(t, "B's release of A's claim", b.Release(ctx, cmd.EventID, "wA", 1))
	// In a batch only the forged item is refused; B's own heartbeat passes.
	_, errs, err := b.ReportBatch(ctx, []api.Report{forged,
		{EventType: api.EvCommandHeartbeat, EventID: cmdB.EventID, WorkerID: "wB", Attempt: 1}})
	if err != nil {
		t.Fatal(err)
	}
	wantNotYours(t, "the forged item of B's batch", errs[0])
	if errs[1] != nil {
		t.Fatalf("B's own heartbeat in the batch: %v", errs[1])
	}
	// The raw answer is the JSON error envelope.
	status, body := rawWith(t, url, b.Token, "POST", "/api/events", fmt.Sprintf(
		`{"event_type":"command.completed","event_id":%d,"worker_id":"wA","attempt":1}`, cmd.EventID))
	if status != 403 || errCode(body) != "claim_not_yours" || !strings.Contains(errMsg(body), "another worker token") {
		t.Fatalf("raw forged report: %d %v", status, body)
	}

	// Nothing changed: A still holds attempt 1 with the same lease.
	after, err := a.Command(ctx, cmd.EventID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != api.CmdClaimed || after.WorkerID != "wA" || after.Attempt != 1 || !after.LeaseExpires.Equal(*before.LeaseExpires) {
		t.Fatalf("command after the forgeries = %+v, want A's untouched claim %+v", after, before)
	}
	// A's real reports are accepted, and the execution goes on with A's result.
	if _, err := a.Report(ctx, api.Report{EventType: api.EvCommandHeartbeat, EventID: cmd.EventID, WorkerID: "wA", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Report(ctx, api.Report{EventType: api.EvCommandCompleted, EventID: cmd.EventID, WorkerID: "wA", Attempt: 1, Result: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatalf("A's completion after the forgeries: %v", err)
	}
	second := issued(t, a, st.ExecutionID, "second")
	c2, err := a.ClaimAndStart(ctx, second.EventID, "wA", st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Report(ctx, api.Report{EventType: api.EvCommandCompleted, EventID: second.EventID, WorkerID: "wA", Attempt: c2.Attempt, Result: json.RawMessage(`{"n":2}`)}); err != nil {
		t.Fatal(err)
	}
	ex, err := op.Execution(ctx, st.ExecutionID)
	if err != nil || ex.Status != "completed" || string(ex.Result) != `{"n":2}` {
		t.Fatalf("execution = %+v, %v; want completed with A's result", ex, err)
	}
	evs, err := a.Events(ctx, st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if strings.Contains(string(e.Result), "forged") {
			t.Fatalf("a forged result reached the event log: %+v", e)
		}
	}

	// A worker that lost its lease to another token gets the usual 409,
	// not 403: it is late, not forging.
	if err := b.Release(ctx, cmdB.EventID, "wB", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Claim(ctx, cmdB.EventID, "wA"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Report(ctx, api.Report{EventType: api.EvCommandHeartbeat, EventID: cmdB.EventID, WorkerID: "wB", Attempt: 1}); client.StatusOf(err) != 409 {
		t.Fatalf("late heartbeat after a re-claim by another token: %v, want 409", err)
	}
}

// rawWith sends a request with a bearer token and returns the status and
// the decoded JSON body.
func rawWith(t *testing.T, base, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s %s: response is not JSON: %q", method, path, data)
	}
	return resp.StatusCode, out
}

// The same binding for a warehouse query (claim, heartbeat, upload, fail,
// fallback) and a pre-aggregate build (claim, heartbeat, complete, fail).
func TestClaimNotYoursQueryAndBuild(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	id := fmt.Sprint(time.Now().UnixNano())
	h := servertest.Start(t, servertest.WithAuth(func(c *config.Server) {
		c.DatabaseURL = db
		c.Query.NATSEnabled = true
		c.Query.ResultsDir = t.TempDir()
		c.Query.Stream, c.Query.Subject, c.Query.Consumer = "WQ_"+id, "wq"+id+".jobs", "wq_"+id
		c.PreAgg.Stream, c.PreAgg.Consumer = "PA_"+id, "pa_"+id
		c.PreAgg.QuerySubject, c.PreAgg.BuildSubject = "pa"+id+".query", "pa"+id+".build"
	}))
	ctx := t.Context()
	url := h.Srv.URL()
	admin := client.New(url).WithToken(h.Token(t, api.RoleAdmin))
	op := client.New(url).WithToken(h.Token(t, api.RoleOperator))
	a := client.New(url).WithToken(h.Token(t, api.RoleWorker))
	b := client.New(url).WithToken(h.Token(t, api.RoleWorker))
	if _, err := admin.ProjectPut(ctx, "shop", api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}

	t.Run("query", func(t *testing.T) {
		sub, err := op.QuerySubmit(ctx, "shop", "SELECT 1 AS one", "interactive", true)
		if err != nil {
			t.Fatal(err)
		}
		var claimed api.ClaimedQuery
		wait.For(t, 10*time.Second, func() error { // queued once its job is published
			claimed, err = a.QueryClaim(ctx, sub.QueryUUID, "wA")
			return err
		})
		if claimed.QueryUUID != sub.QueryUUID {
			t.Fatalf("claim = %+v", claimed)
		}
		wantNotYours(t, "B's heartbeat in A's name", b.QueryHeartbeat(ctx, sub.QueryUUID, "wA"))
		wantNotYours(t, "B's failure in A's name", b.QueryFail(ctx, sub.QueryUUID, "wA", "forged"))
		wantNotYours(t, "B's fallback in A's name", b.QueryFallback(ctx, sub.QueryUUID, "wA", api.QueryFallback{Code: api.PreAggMissObjectLost}))
		wantNotYours(t, "B's upload in A's name", b.QueryUpload(ctx, sub.QueryUUID, "wA",
			strings.NewReader(`{"columns":[{"name":"one","type":"int4"}]}`+"\n[666]\n")))
		if err := b.QueryHeartbeat(ctx, sub.QueryUUID, "wB"); apiCode(err) != "state_conflict" {
			t.Fatalf("B's heartbeat in its own name: %v, want state_conflict (not the holder)", err)
		}
		// A still runs it, and its results are the ones kept.
		if err := a.QueryHeartbeat(ctx, sub.QueryUUID, "wA"); err != nil {
			t.Fatal(err)
		}
		if err := a.QueryUpload(ctx, sub.QueryUUID, "wA", strings.NewReader(`{"columns":[{"name":"one","type":"int4"}]}`+"\n[1]\n")); err != nil {
			t.Fatalf("A's upload after the forgeries: %v", err)
		}
		page, err := op.QueryGet(ctx, "shop", sub.QueryUUID, 1, 10)
		if err != nil || page.Status != api.QueryReady || len(page.Rows) != 1 || fmt.Sprint(page.Rows[0]) != "map[one:1]" {
			t.Fatalf("query after A's upload = %+v, %v; want ready with A's row", page, err)
		}
	})

	t.Run("build", func(t *testing.T) {
		putDailyModel(t, db)
		var uuid string
		wait.For(t, 30*time.Second, func() error {
			list, err := op.PreAggregates(ctx, "shop")
			if err != nil {
				return err
			}
			if len(list) != 1 || list[0].Last == nil || list[0].Last.Status != api.BuildQueued {
				return fmt.Errorf("pre-aggregates = %+v, want a queued build", list)
			}
			uuid = list[0].Last.BuildUUID
			return nil
		})
		if _, err := a.BuildClaim(ctx, uuid, "wA"); err != nil {
			t.Fatal(err)
		}
		wantNotYours(t, "B's build heartbeat in A's name", b.BuildHeartbeat(ctx, uuid, "wA"))
		wantNotYours(t, "B's build failure in A's name", b.BuildFail(ctx, uuid, "wA", "forged"))
		forged := api.PartitionObject{Object: "shop/orders/daily/" + uuid + "/forged.parquet", Rows: 666, Bytes: 1, BuildUUID: uuid}
		wantNotYours(t, "B's build completion in A's name", b.BuildComplete(ctx, uuid, "wA", api.BuildComplete{Partitions: []api.PartitionObject{forged}}))
		if err := a.BuildHeartbeat(ctx, uuid, "wA"); err != nil {
			t.Fatal(err)
		}
		real := api.PartitionObject{Object: "shop/orders/daily/" + uuid + "/all.parquet", Rows: 12, Bytes: 345, BuildUUID: uuid}
		if err := a.BuildComplete(ctx, uuid, "wA", api.BuildComplete{Partitions: []api.PartitionObject{real}}); err != nil {
			t.Fatalf("A's completion after the forgeries: %v", err)
		}
		bl, err := op.PreAggBuild(ctx, "shop", uuid)
		if err != nil || bl.Status != api.BuildActive || bl.Rows != 12 {
			t.Fatalf("build = %+v, %v; want active with A's 12 rows", bl, err)
		}
	})
}
