package bus

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// memoryReplicasRisk says why a replicated stream on the memory store is
// fragile, or "" when it is not one. A memory replica keeps its Raft state
// in memory too: a node that restarts comes back empty, so with one node
// lost for good and a second restarted, a majority of the stream's (and
// its consumers') replicas have lost their state and the group may never
// elect a leader again. Workers then get "JetStream system temporarily
// unavailable" until an operator recreates the stream (the fault matrix's
// nats-cluster fault showed executions stuck that way for minutes).
func memoryReplicasRisk(storage jetstream.StorageType, replicas int) string {
	if storage != jetstream.MemoryStorage || replicas <= 1 {
		return ""
	}
	return fmt.Sprintf("a memory stream with %d replicas loses its consensus state when a majority of its nodes restart or are lost (a restarted node comes back empty), and then stays unavailable; set NATS_STORAGE=file with NATS_REPLICAS>1", replicas)
}

// warnMemoryReplicas logs memoryReplicasRisk for a stream Millrace uses.
func (c *Conn) warnMemoryReplicas(stream string, storage jetstream.StorageType, replicas int) {
	if risk := memoryReplicasRisk(storage, replicas); risk != "" {
		c.logger().Warn("replicated NATS stream on the memory store", "stream", stream, "replicas", replicas,
			"risk", risk, "remedy", fmt.Sprintf("set NATS_STORAGE=file, delete the stream with `millrace nats stream rm %s` and restart so Millrace recreates it on file", stream))
	}
}
