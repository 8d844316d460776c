package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/server/servertest"
)

// GET /api/executions filters by status and by path (exact, or a prefix
// ending in '*') on the server; total counts the matches.
func TestExecutionListFilters(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, nil)
	ctx := t.Context()
	for _, pb := range []string{oneStep, twoSteps} {
		if _, err := h.API.Register(ctx, pb); err != nil {
			t.Fatal(err)
		}
	}
	var one []int64
	for range 2 {
		st, err := h.API.Execute(ctx, "t/one", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		one = append(one, st.ExecutionID)
	}
	two, err := h.API.Execute(ctx, "t/two", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.API.Cancel(ctx, one[0]); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query string
		want  []int64
	}{
		{"status=cancelled", []int64{one[0]}},
		{"path=t/one", []int64{one[1], one[0]}},
		{"path=t/*", []int64{two.ExecutionID, one[1], one[0]}},
		{"path=t/o*&page_size=1", []int64{one[1]}},
		{"path=t/", nil},
		{"path=t/two&status=cancelled", nil},
	} {
		var page api.ExecutionPage
		if code := getJSON(t, h.Srv.URL()+"/api/executions?"+tc.query, &page); code != 200 {
			t.Fatalf("%s: status %d", tc.query, code)
		}
		var got []int64
		for _, e := range page.Executions {
			got = append(got, e.ExecutionID)
			if strings.Contains(tc.query, "status=") && e.Status != api.ExecCancelled {
				t.Errorf("%s: execution %d is %s", tc.query, e.ExecutionID, e.Status)
			}
		}
		wantTotal := int64(len(tc.want))
		if tc.query == "path=t/o*&page_size=1" {
			wantTotal = 2
		}
		if len(got) != len(tc.want) || page.Total != wantTotal {
			t.Fatalf("%s: executions %v total %d; want %v total %d", tc.query, got, page.Total, tc.want, wantTotal)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("%s: executions %v; want %v", tc.query, got, tc.want)
			}
		}
	}
	res, err := http.Get(h.Srv.URL() + "/api/executions?status=done")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 || !strings.Contains(string(body), "bad_request") || !strings.Contains(string(body), "running, completed, failed, cancelled") {
		t.Fatalf("status=done: %d %s; want 400 bad_request naming the statuses", res.StatusCode, body)
	}
}
