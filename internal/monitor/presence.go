package monitor

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
)

// presenceTTL is how long a worker counts as online after its last beat.
const presenceTTL = bus.PresenceMissed * bus.PresenceInterval

// presence keeps the workers heard from lately. Beats arrive on the NATS
// client's goroutine; samples read a snapshot.
type presence struct {
	mu      sync.Mutex
	workers map[string]beat
	// pools are every (kind, pool) ever seen: they stay exported, at 0
	// once their workers are gone, so a pool that died still shows.
	pools map[poolKey]bool
	conn  *nats.Conn
	sub   *nats.Subscription
	now   func() time.Time
}

type poolKey struct{ kind, pool string }

type beat struct {
	bus.Presence
	seen time.Time // this server's clock, so worker clocks do not matter
}

func newPresence(now func() time.Time) *presence {
	return &presence{workers: map[string]beat{}, pools: map[poolKey]bool{}, now: now}
}

// attach subscribes on c unless already subscribed on it (the server's
// NATS connection may arrive late; core subscriptions survive reconnects).
func (p *presence) attach(c *bus.Conn) error {
	if c == nil {
		return nil
	}
	p.mu.Lock()
	same := p.conn == c.NC
	p.mu.Unlock()
	if same {
		return nil
	}
	sub, err := c.NC.Subscribe(bus.PresencePrefix+">", p.receive)
	if err != nil {
		return err
	}
	p.mu.Lock()
	old := p.sub
	p.conn, p.sub = c.NC, sub
	p.mu.Unlock()
	if old != nil {
		_ = old.Unsubscribe()
	}
	return nil
}

func (p *presence) close() {
	p.mu.Lock()
	sub := p.sub
	p.sub, p.conn = nil, nil
	p.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

func (p *presence) receive(m *nats.Msg) {
	var b bus.Presence
	if err := json.Unmarshal(m.Data, &b); err != nil || b.WorkerID == "" || b.Kind == "" {
		return // not a beat of ours: ignore rather than count a stranger
	}
	p.mu.Lock()
	p.workers[b.WorkerID] = beat{Presence: b, seen: p.now()}
	p.pools[poolKey{b.Kind, b.Pool}] = true
	p.mu.Unlock()
}

// snapshot forgets workers silent for presenceTTL and sums the rest per
// (kind, pool). Every kind in kinds has its default pool, even at 0.
func (p *presence) snapshot(kinds []string) []api.OpsWorkers {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range kinds {
		p.pools[poolKey{k, ""}] = true
	}
	sums := map[poolKey]*api.OpsWorkers{}
	for k := range p.pools {
		sums[k] = &api.OpsWorkers{Kind: k.kind, Pool: k.pool}
	}
	for id, b := range p.workers {
		if now.Sub(b.seen) > presenceTTL {
			delete(p.workers, id)
			continue
		}
		w := sums[poolKey{b.Kind, b.Pool}]
		w.Online++
		w.Slots += b.Slots
		w.Busy += b.Busy
	}
	out := make([]api.OpsWorkers, 0, len(sums))
	for _, w := range sums {
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Pool < out[j].Pool
	})
	return out
}
