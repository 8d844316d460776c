package faults

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// tcpProxy forwards loopback connections to a target and can cut them off
// like a network partition: while blackholed, bytes either way are read
// and dropped (nothing is refused or reset, so peers see silence until
// their own timeouts fire). A connection that lost bytes is closed when
// the partition heals, as TCP would have given up on it; new connections
// after that are forwarded again.
type tcpProxy struct {
	ln     net.Listener
	target string
	hole   atomic.Bool

	mu      sync.Mutex
	conns   map[*proxyConn]struct{}
	dropped atomic.Int64 // bytes dropped, for the test's log
}

type proxyConn struct {
	client, server net.Conn
	lost           atomic.Bool
}

func (c *proxyConn) close() {
	_ = c.client.Close()
	_ = c.server.Close()
}

// startTCPProxy listens on a free loopback port and forwards to target
// until the test ends.
func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.accept()
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		p.mu.Lock()
		for c := range p.conns {
			c.close()
		}
		p.mu.Unlock()
	})
	return p
}

// Addr is the proxy's listening address.
func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

// Partition starts dropping every byte either way.
func (p *tcpProxy) Partition() { p.hole.Store(true) }

// Heal stops dropping and closes the connections that lost bytes.
func (p *tcpProxy) Heal() {
	p.hole.Store(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if c.lost.Load() {
			c.close()
			delete(p.conns, c)
		}
	}
}

// Dropped is how many bytes the partitions dropped so far.
func (p *tcpProxy) Dropped() int64 { return p.dropped.Load() }

func (p *tcpProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(client)
	}
}

func (p *tcpProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		// The target is down: as a refused connect would look.
		_ = client.Close()
		return
	}
	c := &proxyConn{client: client, server: server}
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(c, server, client) }()
	go func() { defer wg.Done(); p.pipe(c, client, server) }()
	wg.Wait()
	if c.lost.Load() && p.hole.Load() {
		return // Heal closes it and forgets it
	}
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// pipe copies src to dst, dropping what it reads while partitioned. A
// close seen during a partition is dropped too (the peer never learns of
// it); Heal closes such a connection.
func (p *tcpProxy) pipe(c *proxyConn, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if p.hole.Load() || c.lost.Load() {
				c.lost.Store(true)
				p.dropped.Add(int64(n))
			} else if _, werr := dst.Write(buf[:n]); werr != nil {
				c.close()
				return
			}
		}
		if err != nil {
			if p.hole.Load() {
				c.lost.Store(true)
				return
			}
			c.close()
			return
		}
	}
}
