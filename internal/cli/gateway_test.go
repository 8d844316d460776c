package cli

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/wait"
)

// lockedBuffer is a bytes.Buffer safe for a command writing while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// `millrace gateway` beside a running dev finds its server and NATS, serves
// until its context ends, and exits 0.
func TestGatewayCommandFindsDev(t *testing.T) {
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	t.Cleanup(api.Close)
	dir := t.TempDir()
	t.Setenv("MILLRACE_DATA_DIR", dir)
	t.Setenv("SERVER_API_URL", "")
	t.Setenv("NATS_URL", "")
	remove := announceDev(newTestLogger(t), dir, api.URL, emb.URL(), "")
	t.Cleanup(remove)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errOut lockedBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"gateway", "--addr", "127.0.0.1:0", "--nats-session-bucket", "cli_sessions", "--nats-request-bucket", "cli_requests"}, &out, &errOut)
	}()
	ready := regexp.MustCompile(`msg="gateway ready" addr=(127\.0\.0\.1:\d+)`)
	var addr string
	wait.For(t, 30*time.Second, func() error {
		select {
		case c := <-code:
			t.Fatalf("gateway exited %d before it was ready:\n%s", c, errOut.String())
		default:
		}
		if m := ready.FindStringSubmatch(errOut.String()); m != nil {
			addr = m[1]
			return nil
		}
		return errors.New("no ready line yet")
	})
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/health %d: the gateway did not reach the dev's server and NATS\n%s", resp.StatusCode, errOut.String())
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d after its context ended:\n%s", c, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gateway still running 30 s after its context ended")
	}
}
