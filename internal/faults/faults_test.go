package faults

import (
	"context"
	"testing"
	"time"
)

// natsDownEnv sets how long fault 4 keeps NATS down: the 20 s at
// full size (scripts/faults.sh), 5 s by default so CI stays short; the
// code path is the same, only the outbox grows for longer.
const natsDownEnv = "MILLRACE_FAULT_NATS_DOWN_SECONDS"

// Fault 1: a worker is SIGKILLed three times in a row, each time with
// commands in flight; a new worker replaces it. Leases expire, the reaper
// re-notifies, and the survivors finish the commands as a later attempt.
func TestFaultMatrixWorkerKill(t *testing.T) {
	t.Parallel()
	selectFault(t, "worker-kill")
	n := executions(t)
	s := startStack(t, stackOpts{Workers: 2})
	ids := s.SubmitMix(n)
	for k := 1; k <= 3; k++ {
		s.WaitProgress(ids, 0.2*float64(k))
		s.Kill(s.Workers[len(s.Workers)-1])
		s.StartWorker()
	}
	s.WaitTerminal(ids)
	s.Check("worker-kill", ids)
	if re := s.reruns(); re == 0 {
		t.Errorf("no command ran a second attempt: the kills did not land mid-command")
	} else {
		t.Logf("%d commands ran again after a kill", re)
	}
}

// Fault 2: two servers share one database; each is SIGKILLed and
// restarted in turn while executions run. Workers keep their results and
// report them once their server is back; the other server's reaper and
// relay carry on meanwhile.
func TestFaultMatrixServerKill(t *testing.T) {
	t.Parallel()
	selectFault(t, "server-kill")
	n := executions(t)
	s := startStack(t, stackOpts{Servers: 2, Workers: 2})
	ids := s.SubmitMix(n)
	s.WaitProgress(ids, 0.2)
	s.RestartServer(0)
	s.WaitProgress(ids, 0.5)
	s.RestartServer(1)
	s.WaitTerminal(ids)
	s.Check("server-kill", ids)
}

// Fault 3: NATS restarts on the memory store while executions run, so the
// stream and every queued notification are gone. The server recreates the
// stream and the reaper republishes what was lost.
func TestFaultMatrixNATSRestart(t *testing.T) {
	t.Parallel()
	selectFault(t, "nats-restart")
	n := executions(t)
	s := startStack(t, stackOpts{Workers: 2})
	ids := s.SubmitMix(n)
	s.WaitProgress(ids, 0.2)
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	s.WaitTerminal(ids)
	s.Check("nats-restart", ids)
}

// Fault 4: NATS is down while the whole mix is submitted and stays down
// for MILLRACE_FAULT_NATS_DOWN_SECONDS. The server accepts every
// submission (the outbox holds the notifications), nothing runs meanwhile,
// and everything runs once NATS is back.
func TestFaultMatrixNATSDown(t *testing.T) {
	t.Parallel()
	selectFault(t, "nats-down")
	n := executions(t)
	down := envSeconds(t, natsDownEnv, 5*time.Second)
	s := startStack(t, stackOpts{Workers: 2})
	s.NATS.Server().Shutdown()
	since := time.Now()
	ids := s.SubmitMix(n)
	if d := down - time.Since(since); d > 0 {
		// Waiting is the fault here: NATS stays down for the period.
		<-time.After(d)
	}
	if ended, err := s.ended(ids); err != nil || ended != 0 {
		t.Fatalf("with NATS down %d executions ended (err %v), want none", ended, err)
	}
	t.Logf("NATS down for %s; %d executions submitted meanwhile", time.Since(since).Round(time.Second), n)
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	s.WaitTerminal(ids)
	s.Check("nats-down", ids)
}

// reruns counts commands that needed more than one attempt.
func (s *stack) reruns() int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var n int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM commands WHERE attempt > 1`).Scan(&n); err != nil {
		s.t.Fatalf("count re-run commands: %v", err)
	}
	return n
}
