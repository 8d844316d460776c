package faults

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestTCPProxyPartition: bytes flow, a partition drops them silently
// (no error, no reply), and healing closes the damaged connection while
// new ones flow again.
func TestTCPProxyPartition(t *testing.T) {
	t.Parallel()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	p := startTCPProxy(t, echo.Addr().String())

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(c net.Conn, r *bufio.Reader, d time.Duration) error {
		if err := c.SetDeadline(time.Now().Add(d)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err == nil && line != "ping\n" {
			return errors.New("echo answered " + line)
		}
		return err
	}
	if err := roundTrip(c, r, time.Minute); err != nil {
		t.Fatalf("before the partition: %v", err)
	}

	p.Partition()
	if err := roundTrip(c, r, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("during the partition: want silence (a read deadline), got %v", err)
	}
	if p.Dropped() == 0 {
		t.Fatal("the partition dropped nothing")
	}

	p.Heal()
	if err := roundTrip(c, r, time.Minute); err == nil {
		t.Fatal("a connection that lost bytes still works after healing; want it closed")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := roundTrip(c2, bufio.NewReader(c2), time.Minute); err != nil {
		t.Fatalf("a new connection after healing: %v", err)
	}
}
