package faults

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// partitionEnv sets how long fault 7 keeps workers cut off from the
// server; the default is three leases, so every lease held across it
// expires and is taken by the worker that still reaches the server.
const partitionEnv = "MILLRACE_FAULT_PARTITION_SECONDS"

// Fault 7: a partition between workers and the server while NATS stays
// up. Two workers reach the server only through a TCP proxy in the test,
// which drops every byte both ways (no reset: requests simply get no
// answer) for longer than the lease; a third worker reaches it directly.
// The cut-off workers' leases expire, the reaper re-notifies, the third
// worker runs those commands again; after the heal the late reports and
// heartbeats get 409 and are not applied twice.
func TestFaultMatrixPartition(t *testing.T) {
	t.Parallel()
	selectFault(t, "partition")
	n := executions(t)
	s := startStack(t, stackOpts{Workers: 1})
	proxy := startTCPProxy(t, s.Servers[0].Addr)
	via := "SERVER_API_URL=http://" + proxy.Addr()
	cut := []int{len(s.Workers), len(s.Workers) + 1}
	s.StartWorker(via)
	s.StartWorker(via)

	ids := s.SubmitMix(n)
	s.WaitProgress(ids, 0.2)
	secs, err := strconv.ParseFloat(s.opts.LeaseSeconds, 64)
	if err != nil {
		t.Fatal(err)
	}
	lease := time.Duration(secs * float64(time.Second))
	hold := envSeconds(t, partitionEnv, 3*lease)
	proxy.Partition()
	// Holding the partition is the fault: it lasts hold, whatever happens.
	<-time.After(hold)
	proxy.Heal()
	t.Logf("partition held %s (lease %s); %d bytes dropped", hold, lease, proxy.Dropped())

	s.WaitTerminal(ids)
	s.Check("partition", ids)
	if re := s.reclaimed(); re == 0 {
		t.Errorf("no command ran a second attempt: the partition outlasted no lease")
	} else {
		t.Logf("%d commands ran again after their lease expired in the partition", re)
	}
	lost := 0
	for _, k := range cut {
		lost += strings.Count(s.Workers[k].Output(), "lease lost")
	}
	t.Logf("the cut-off workers logged %d lost leases (409 on a heartbeat or report)", lost)
}

// reclaimed counts commands that ran more than one attempt.
func (s *stack) reclaimed() int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var n int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM commands WHERE attempt > 1`).Scan(&n); err != nil {
		s.t.Fatalf("count re-run commands: %v", err)
	}
	return n
}
