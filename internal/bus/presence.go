package bus

import (
	"encoding/json"
	"time"
)

// Worker presence: every worker publishes a beat on core NATS (not
// JetStream: a beat is worth nothing once the next one is due) and every
// server counts the workers it heard from lately, per kind and pool.
const (
	// PresencePrefix is the subject prefix of presence beats; a server
	// subscribes to PresencePrefix + ">".
	PresencePrefix = "millrace.presence."
	// PresenceInterval is how often a worker beats.
	PresenceInterval = 5 * time.Second
	// PresenceMissed is how many beats a worker may miss before a server
	// counts it gone.
	PresenceMissed = 3
)

// Presence kinds: the worker kinds, named as `millrace worker --stream`.
const (
	KindCommands     = "commands"
	KindWarehouse    = "warehouse"
	KindPreAggregate = "pre-aggregate"
)

// PresenceSubject is where workers of kind beat.
func PresenceSubject(kind string) string { return PresencePrefix + kind }

// Presence is one beat: who the worker is and how busy.
type Presence struct {
	WorkerID string    `json:"worker_id"`
	Kind     string    `json:"kind"`
	Pool     string    `json:"pool"` // "" is the default pool
	Slots    int       `json:"slots"`
	Busy     int       `json:"busy"`
	At       time.Time `json:"at"`
}

// PublishPresence sends one beat. Best effort: a beat lost while NATS is
// away is replaced by the next.
func (c *Conn) PublishPresence(p Presence) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return c.NC.Publish(PresenceSubject(p.Kind), b)
}
