package bench

import (
	"context"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/backoff"
	"github.com/millrace/millrace/internal/client"
)

// answerCount counts submit answers by HTTP status, safe for the
// submitters to share.
type answerCount struct {
	mu sync.Mutex
	n  map[string]int64
}

func (a *answerCount) add(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int64{}
	}
	a.n[key]++
}

func (a *answerCount) snapshot() map[string]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.n)
}

// answerKey is the row of the answers table err belongs to.
func answerKey(err error) string {
	if err == nil {
		return strconv.Itoa(http.StatusOK)
	}
	if st := client.StatusOf(err); st != 0 {
		return strconv.Itoa(st)
	}
	return "no answer"
}

// Backoff of a submit the server shed (429): the server asks for a second;
// the jitter spreads the submitters it turned away together.
var shedBackoff = backoff.Backoff{Min: 200 * time.Millisecond, Max: 2 * time.Second}

// submitOne submits one execution, retrying while the server sheds it
// (429: nothing was done), and counts every answer. ok is false when the
// execution was not accepted (another refusal, a 5xx, no answer, or ctx
// ended): a benchmark counts failures instead of stopping at the first.
func submitOne(ctx context.Context, srv *client.Client, reg api.Registered, answers *answerCount) (api.Started, bool) {
	bo := shedBackoff
	for {
		st, err := srv.Execute(ctx, reg.Path, reg.Version, nil)
		if ctx.Err() != nil {
			return st, false // the run's timeout: not the server's answer
		}
		answers.add(answerKey(err))
		if err == nil {
			return st, true
		}
		if client.StatusOf(err) != http.StatusTooManyRequests || !backoff.Sleep(ctx, bo.Next()) {
			return st, false
		}
	}
}
