package bus

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Worker pools route commands by subject: a step with `pool: P` is
// notified on <NATS_SUBJECT>.P and taken by the pool's own durable,
// <NATS_CONSUMER>_P, filtered to that subject; everything else stays on
// <NATS_SUBJECT> and the default durable, filtered to exactly that
// subject, so a routed step never reaches a default worker. The stream
// already captures <NATS_SUBJECT>.> for this (StreamConfig).

// AllPools as Config.Pool makes the default durable take every subject of
// the stream, the default pool's and every routed pool's. Only `millrace
// dev` uses it, whose in-process workers run everything; it is not a valid
// MILLRACE_WORKER_POOL.
const AllPools = "*"

// MaxPoolName is the longest pool name: a DNS label, so a pool can name a
// Kubernetes Deployment too.
const MaxPoolName = 63

// PoolNamePattern is the rule for a pool name (a DNS label): lower-case
// letters, digits and '-', starting and ending with a letter or digit.
// The playbook parser applies the same rule to `pool:`.
const PoolNamePattern = `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`

var poolNameRE = regexp.MustCompile(PoolNamePattern)

// CheckPool reports why name cannot be a worker pool; "" (the default
// pool) is valid.
func CheckPool(name string) error {
	switch {
	case name == "":
		return nil
	case len(name) > MaxPoolName:
		return fmt.Errorf("is %d characters long; at most %d", len(name), MaxPoolName)
	case !poolNameRE.MatchString(name):
		return fmt.Errorf("must be lower-case letters, digits and '-', starting and ending with a letter or digit (%s)", PoolNamePattern)
	}
	return nil
}

// PoolSubject is the subject a command routed to pool is notified on:
// subject itself for the default pool ("").
func PoolSubject(subject, pool string) string {
	if pool == "" {
		return subject
	}
	return subject + "." + pool
}

// PoolConsumer is the durable consumer of pool: consumer itself for the
// default pool ("") and for AllPools.
func PoolConsumer(consumer, pool string) string {
	if pool == "" || pool == AllPools {
		return consumer
	}
	return consumer + "_" + pool
}

// filterSubject is what this configuration's consumer takes: its pool's
// subject, or the whole stream ("") for AllPools.
func (c Config) filterSubject() string {
	if c.Pool == AllPools {
		return ""
	}
	return PoolSubject(c.Subject, c.Pool)
}

// PoolDurable is the name of this configuration's consumer: Consumer for
// the default pool, Consumer_<Pool> for a routed one.
func (c Config) PoolDurable() string { return PoolConsumer(c.Consumer, c.Pool) }

// CommandBacklog is how many notifications the command consumers (the
// default pool's and every worker pool's) have not delivered yet, and when
// the command stream was created: the command reaper's backlog. A pool's
// queue counts as much as the default one: re-notifying what waits in it
// would only grow it. A pool nobody runs has no consumer and counts
// nothing, so its steps are re-notified at the normal pace.
func (c *Conn) CommandBacklog(ctx context.Context) (int64, time.Time, error) {
	stream, err := c.JS.Stream(ctx, c.Cfg.Stream)
	if err != nil {
		return 0, time.Time{}, err
	}
	var pending int64
	found := false
	list := stream.ListConsumers(ctx)
	for info := range list.Info() {
		if info.Name == c.Cfg.Consumer || strings.HasPrefix(info.Name, c.Cfg.Consumer+"_") {
			pending += int64(info.NumPending)
			found = true
		}
	}
	if err := list.Err(); err != nil {
		return 0, time.Time{}, err
	}
	if !found {
		return 0, time.Time{}, fmt.Errorf("no command consumer %s on stream %s", c.Cfg.Consumer, c.Cfg.Stream)
	}
	return pending, stream.CachedInfo().Created, nil
}
