package client

import (
	"context"
	"net/http"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// Ops reads the server's operational report (GET /api/ops). skew is this
// process's clock minus the server's, from the reply's Date header against
// the middle of the request (Date has whole seconds: ±1 s); 0 with ok
// false when the reply had no Date.
func (c *Client) Ops(ctx context.Context) (rep api.OpsReport, skew time.Duration, ok bool, err error) {
	var date string
	hc := *c.HTTP
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = roundTrip(func(r *http.Request) (*http.Response, error) {
		res, err := next.RoundTrip(r)
		if res != nil {
			date = res.Header.Get("Date")
		}
		return res, err
	})
	cc := *c
	cc.HTTP = &hc
	t0 := time.Now()
	if err = cc.do(ctx, "GET", "/api/ops", nil, &rep); err != nil {
		return rep, 0, false, err
	}
	t1 := time.Now()
	at, perr := http.ParseTime(date)
	if perr != nil {
		return rep, 0, false, nil
	}
	// Date truncates to the second: compare against its middle.
	mid := t0.Add(t1.Sub(t0) / 2)
	return rep, mid.Sub(at.Add(500 * time.Millisecond)), true, nil
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
