// Package ids generates Millrace's 64-bit, time-ordered identifiers.
//
// Layout (like Snowflake): 1 sign bit (0), 41 bits of milliseconds since
// Epoch, 10 bits of node id, 12 bits of per-millisecond sequence. IDs from one
// generator are strictly increasing; IDs from different nodes are unique as
// long as the node ids differ. Values exceed 2^53, so JavaScript clients must
// parse them as BigInt or strings; Go, Python and PostgreSQL clients are fine.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// Epoch is the zero point of the timestamp field: 2025-01-01T00:00:00Z.
var Epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	nodeBits = 10
	seqBits  = 12
	// MaxNode is the largest valid node id.
	MaxNode = 1<<nodeBits - 1
	maxSeq  = 1<<seqBits - 1
)

// Generator hands out ids. The zero value is not usable; call New.
type Generator struct {
	mu     sync.Mutex
	node   int64
	lastMS int64
	seq    int64
}

// New returns a generator for node (0..MaxNode). A negative node picks a
// random one, which is what a process without an assigned id wants.
func New(node int) *Generator {
	if node < 0 || node > MaxNode {
		var b [2]byte
		_, _ = rand.Read(b[:])
		node = int(binary.BigEndian.Uint16(b[:]) & MaxNode)
	}
	return &Generator{node: int64(node)}
}

// Node returns the generator's node id.
func (g *Generator) Node() int { return int(g.node) }

// Next returns a new id. It never returns the same value twice and waits for
// the next millisecond when 4096 ids were issued in the current one. If the
// wall clock goes backwards it keeps using the last timestamp.
func (g *Generator) Next() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := time.Since(Epoch).Milliseconds()
	if ms < g.lastMS {
		ms = g.lastMS
	}
	if ms == g.lastMS {
		g.seq++
		if g.seq > maxSeq {
			for ms <= g.lastMS {
				time.Sleep(100 * time.Microsecond)
				ms = time.Since(Epoch).Milliseconds()
			}
			g.seq = 0
		}
	} else {
		g.seq = 0
	}
	g.lastMS = ms
	return ms<<(nodeBits+seqBits) | g.node<<seqBits | g.seq
}

// Time returns the creation time encoded in id.
func Time(id int64) time.Time {
	return Epoch.Add(time.Duration(id>>(nodeBits+seqBits)) * time.Millisecond)
}

// Floor returns the smallest id any generator can issue at t: every id
// issued at t or later is >= Floor(t).
func Floor(t time.Time) int64 {
	ms := t.Sub(Epoch).Milliseconds()
	if ms < 0 {
		return 0
	}
	return ms << (nodeBits + seqBits)
}

// Span is how far apart, in id values, two ids issued d apart are (at
// least): ids are time-ordered, so a window of time is a window of ids.
func Span(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return d.Milliseconds() << (nodeBits + seqBits)
}
