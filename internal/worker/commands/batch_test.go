package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/wait"
)

func TestBatcher(t *testing.T) {
	t.Parallel()

	t.Run("ConcurrentCallsShareRequestsAndGetTheirOwnResults", func(t *testing.T) {
		t.Parallel()
		var requests atomic.Int64
		release := make(chan struct{})
		b := newBatcher("test", 1, 16, func(ctx context.Context, ins []int) ([]string, []error, error) {
			if requests.Add(1) == 1 {
				<-release // hold the first request so the rest queue up
			}
			outs, errs := make([]string, len(ins)), make([]error, len(ins))
			for i, in := range ins {
				if in%5 == 0 {
					errs[i] = fmt.Errorf("item %d refused", in)
					continue
				}
				outs[i] = fmt.Sprint("r", in)
			}
			return outs, errs, nil
		})
		defer b.close()
		const n = 40
		var wg sync.WaitGroup
		for i := 1; i <= n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := b.do(t.Context(), i)
				switch {
				case i%5 == 0 && (err == nil || err.Error() != fmt.Sprintf("item %d refused", i)):
					t.Errorf("call %d: err %v, want its own refusal", i, err)
				case i%5 != 0 && (err != nil || out != fmt.Sprint("r", i)):
					t.Errorf("call %d: %q, %v", i, out, err)
				}
			}()
		}
		// Release the first request once the others wait behind it.
		// Past the deadline it releases anyway: the batching checks below
		// then say what went wrong.
		_ = wait.Poll(10*time.Second, func() error {
			if w := b.waiting.Load(); w < n {
				return fmt.Errorf("%d of %d calls waiting", w, n)
			}
			return nil
		})
		close(release)
		wg.Wait()
		if got := requests.Load(); got >= n {
			t.Fatalf("%d requests for %d calls: nothing was batched", got, n)
		}
		if got := requests.Load(); got < (n+15)/16 {
			t.Fatalf("%d requests for %d calls: batches exceed the maximum of 16", got, n)
		}
	})

	t.Run("ARequestErrorReachesEveryCallerOfItsBatch", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("server unreachable")
		b := newBatcher("test", 2, 8, func(ctx context.Context, ins []int) ([]int, []error, error) {
			return nil, nil, boom
		})
		defer b.close()
		for i := range 5 {
			if _, err := b.do(t.Context(), i); !errors.Is(err, boom) {
				t.Fatalf("call %d: %v, want the request's error", i, err)
			}
		}
	})

	t.Run("CallsAfterCloseFail", func(t *testing.T) {
		t.Parallel()
		b := newBatcher("test", 1, 8, func(ctx context.Context, ins []int) ([]int, []error, error) {
			return make([]int, len(ins)), make([]error, len(ins)), nil
		})
		b.close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if _, err := b.do(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Fatalf("call after close: %v, want context.Canceled", err)
		}
	})
}
