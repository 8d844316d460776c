package api

import (
	"time"

	"github.com/millrace/millrace/internal/playbook"
)

// Streams is the reply of GET /api/streams: the JetStream streams the
// server uses, their consumers (lag, in-flight slots, redeliveries) and the
// outbox, for the web UI's workers and streams page.
type Streams struct {
	NATS    string       `json:"nats"` // "ok" or why not
	Streams []StreamInfo `json:"streams"`
	Stats   *Stats       `json:"stats,omitempty"` // outbox depth, running executions, pending commands
	Queries *QueueStats  `json:"queries,omitempty"`
}

// StreamInfo is one JetStream stream.
type StreamInfo struct {
	Name      string         `json:"name"`
	Role      string         `json:"role"` // commands | queries | preaggregates
	Subjects  []string       `json:"subjects"`
	Messages  uint64         `json:"messages"`
	Bytes     uint64         `json:"bytes"`
	Consumers []ConsumerInfo `json:"consumers"`
	Error     string         `json:"error,omitempty"`
}

// ConsumerInfo is one consumer of a stream: a pool of workers pulling
// from it.
type ConsumerInfo struct {
	Name string `json:"name"`
	// Pending is the lag: messages not yet delivered to any worker.
	Pending uint64 `json:"pending"`
	// InFlight are delivered and not yet acknowledged: busy worker slots.
	InFlight int `json:"in_flight"`
	// MaxInFlight is the consumer's max_ack_pending: the pool's slot cap.
	MaxInFlight int `json:"max_in_flight"`
	// Redelivered counts in-flight messages delivered more than once.
	Redelivered int `json:"redelivered"`
	// Waiting are open pull requests: idle workers asking for work.
	Waiting    int        `json:"waiting"`
	AckWait    string     `json:"ack_wait"`
	MaxDeliver int        `json:"max_deliver"`
	Delivered  uint64     `json:"delivered"` // the consumer sequence
	LastActive *time.Time `json:"last_active,omitempty"`
}

// PlaybookGraph is the reply of GET /api/graph/{path}?version=N: a
// registered playbook's steps and arcs, for the UI's step graph, and what
// validation says about its source.
type PlaybookGraph struct {
	Path      string             `json:"path"`
	Version   int                `json:"version"`
	CatalogID int64              `json:"catalog_id"`
	Start     string             `json:"start"`
	Steps     []GraphStep        `json:"steps"`
	Arcs      []GraphArc         `json:"arcs"`
	Errors    []playbook.Problem `json:"errors"`
	Warnings  []playbook.Problem `json:"warnings"`
}

// GraphStep is one step of a PlaybookGraph.
type GraphStep struct {
	Name  string   `json:"name"`
	Desc  string   `json:"desc,omitempty"`
	Kind  string   `json:"kind"`            // the tool kind, or "tasks" for a task list
	Tasks []string `json:"tasks,omitempty"` // a task list's task names
	Loop  bool     `json:"loop,omitempty"`
	Mode  string   `json:"mode,omitempty"` // the next block's mode: exclusive | inclusive
	Line  int      `json:"line,omitempty"`
}

// GraphArc is an edge from one step to the next.
type GraphArc struct {
	From string `json:"from"`
	To   string `json:"to"`
	When string `json:"when,omitempty"`
}
