package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/wait"
)

// Fault 5: PostgreSQL `pg_ctl restart -m immediate` on the test's own
// cluster (initdb on a random port, never the shared one) with work in
// flight and submissions running through the restart. Every connection is
// cut and crash recovery runs; the server answers 503 meanwhile (never
// another 5xx), clients retry, workers' reports retry, and nothing is
// lost or doubled.
func TestFaultMatrixPGRestart(t *testing.T) {
	t.Parallel()
	selectFault(t, "pg-restart")
	n := executions(t)
	pg := startPGCluster(t)
	s := startStack(t, stackOpts{Workers: 2, DatabaseURL: pg.URL()})
	ids := s.SubmitMix(n / 2)
	s.WaitProgress(ids, 0.2)

	sub := s.submitThrough(n/2, n-n/2)
	sub.waitSubmitted(t, (n-n/2)/10) // the restart lands with submissions in flight
	pg.RestartImmediate(t)
	t.Logf("PostgreSQL restarted (-m immediate) with %d submissions done", sub.done.Load())
	ids = append(ids, sub.wait(t)...)

	s.WaitTerminal(ids)
	s.Check("pg-restart", ids)
	t.Logf("answers to submissions during the restart: %s (0: no HTTP answer); other than 200/503: %q", sub.statuses(), sub.odd)
	if bad := sub.unretryable(); bad > 0 {
		t.Errorf("%d submissions got a 5xx other than 503 (want every store outage answered 503 with Retry-After): %s", bad, sub.statuses())
	}
}

// submitter submits a range of the mix through the stack's first server,
// retrying each one until it is accepted, and counts every answer by
// status (0: no answer, the connection failed).
type submitter struct {
	done atomic.Int64
	mu   sync.Mutex
	ids  []int64
	seen map[int]int
	odd  []string // a few answers other than 200 and 503, for the log
	errs []string
	wg   sync.WaitGroup
}

// submitThrough starts submitting count executions from the mix's item
// first on, submitConcurrency at a time.
func (s *stack) submitThrough(first, count int) *submitter {
	sub := &submitter{seen: map[int]int{}}
	var next atomic.Int64
	api := s.Servers[0].API
	for range submitConcurrency {
		sub.wg.Add(1)
		go func() {
			defer sub.wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				id, err := sub.one(s, api, first+i)
				if err != nil {
					sub.mu.Lock()
					sub.errs = append(sub.errs, err.Error())
					sub.mu.Unlock()
					return
				}
				sub.mu.Lock()
				sub.ids = append(sub.ids, id)
				sub.mu.Unlock()
				sub.done.Add(1)
			}
		}()
	}
	return sub
}

// one submits item i until it is accepted, for at most five minutes.
func (sub *submitter) one(s *stack, api *client.Client, i int) (int64, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(s.t.Context(), time.Minute)
		id, err := s.SubmitOne(ctx, api, i)
		cancel()
		st := statusOf(err)
		sub.mu.Lock()
		sub.seen[st]++
		if st != http.StatusOK && st != http.StatusServiceUnavailable && len(sub.odd) < 5 {
			sub.odd = append(sub.odd, err.Error())
		}
		sub.mu.Unlock()
		if err == nil {
			return id, nil
		}
		if time.Now().After(deadline) || s.t.Context().Err() != nil {
			return 0, fmt.Errorf("submit %d: still refused after 5 minutes: %w", i, err)
		}
		// Pacing the retries of a refused submission, as a client's
		// backoff would; not a wait for a condition.
		<-time.After(100 * time.Millisecond)
	}
}

func statusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var e *client.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// waitSubmitted waits until at least k submissions were accepted.
func (sub *submitter) waitSubmitted(t *testing.T, k int) {
	t.Helper()
	wait.For(t, 5*time.Minute, func() error {
		if d := sub.done.Load(); d < int64(k) {
			return fmt.Errorf("%d of %d submissions accepted", d, k)
		}
		return nil
	})
}

// wait waits for every submission and returns the accepted ids; one that
// was never accepted fails the test.
func (sub *submitter) wait(t *testing.T) []int64 {
	t.Helper()
	sub.wg.Wait()
	for _, e := range sub.errs {
		t.Error(e)
	}
	return sub.ids
}

// unretryable counts answers that are server errors other than 503.
func (sub *submitter) unretryable() int {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	n := 0
	for st, k := range sub.seen {
		if st >= 500 && st != http.StatusServiceUnavailable {
			n += k
		}
	}
	return n
}

// statuses renders the answers, e.g. "200×480 503×12 0×3".
func (sub *submitter) statuses() string {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	var keys []int
	for st := range sub.seen {
		keys = append(keys, st)
	}
	sort.Ints(keys)
	var parts []string
	for _, st := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", st, sub.seen[st]))
	}
	return strings.Join(parts, " ")
}
