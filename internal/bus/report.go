package bus

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamReport is one stream as `nats stream report` shows it, with its
// consumers as `nats consumer report` shows them. The CLI reports, the
// server's gauges (package monitor) and `millrace doctor` all read this.
type StreamReport struct {
	Name     string   `json:"name"`
	Subjects []string `json:"subjects"`
	Storage  string   `json:"storage"` // memory | file
	// Replicas is the configured count; Cluster names the peers.
	Replicas  int              `json:"replicas"`
	Cluster   *Peers           `json:"cluster,omitempty"`
	Messages  uint64           `json:"messages"`
	Bytes     uint64           `json:"bytes"`
	FirstSeq  uint64           `json:"first_seq"`
	LastSeq   uint64           `json:"last_seq"`
	Lost      uint64           `json:"lost_messages"`
	LostBytes uint64           `json:"lost_bytes"`
	Deleted   int              `json:"deleted"`
	Consumers []ConsumerReport `json:"consumers"`
	// Missing says the stream does not exist (yet): the process that uses
	// it creates it at start. Error then says so too.
	Missing bool `json:"missing,omitempty"`
	// Error is set when the stream could not be read (missing, or NATS
	// answered with an error); the other fields are then zero.
	Error string `json:"error,omitempty"`
}

// Peers is a clustered stream's or consumer's placement: the leader and
// the other replicas.
type Peers struct {
	Name     string `json:"name,omitempty"`
	Leader   string `json:"leader"`
	Replicas []Peer `json:"replicas"`
}

// Clustered says the placement is in a NATS cluster; a single server
// reports itself as leader with no cluster name.
func (p *Peers) Clustered() bool { return p != nil && p.Name != "" }

// String renders the peers as `nats stream report` does: sorted by name,
// the leader suffixed *, a replica that is offline or not current
// suffixed !.
func (p *Peers) String() string {
	if p == nil {
		return ""
	}
	var names []string
	if p.Leader != "" {
		names = append(names, p.Leader+"*")
	}
	for _, r := range p.Replicas {
		name := r.Name
		if r.Offline || !r.Current {
			name += "!"
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Peer is one non-leader replica.
type Peer struct {
	Name    string        `json:"name"`
	Current bool          `json:"current"`
	Offline bool          `json:"offline"`
	Active  time.Duration `json:"active"`
	Lag     uint64        `json:"lag"`
}

// ConsumerReport is one durable consumer (one worker pool or lane).
type ConsumerReport struct {
	Stream         string        `json:"stream"`
	Name           string        `json:"name"`
	Mode           string        `json:"mode"` // Pull | Push
	FilterSubjects []string      `json:"filter_subjects,omitempty"`
	AckPolicy      string        `json:"ack_policy"`
	AckWait        time.Duration `json:"ack_wait"`
	MaxDeliver     int           `json:"max_deliver"`
	MaxAckPending  int           `json:"max_ack_pending"`
	AckPending     int           `json:"ack_pending"`
	Redelivered    int           `json:"redelivered"`
	// Unprocessed is num_pending: messages not yet delivered to any worker.
	Unprocessed uint64 `json:"unprocessed"`
	// UnprocessedPct is Unprocessed as a share of the stream's messages.
	UnprocessedPct float64 `json:"unprocessed_pct"`
	AckFloor       uint64  `json:"ack_floor"`
	Waiting        int     `json:"waiting_pulls"`
	// Lag is Unprocessed + AckPending, the figure KEDA's nats-jetstream
	// scaler reads.
	Lag     uint64 `json:"lag"`
	Cluster *Peers `json:"cluster,omitempty"`
	// Delivered is the consumer sequence; LastActive the last delivery.
	Delivered  uint64     `json:"delivered"`
	LastActive *time.Time `json:"last_active,omitempty"`
}

// URL is the connected server's URL without its credentials.
func (c *Conn) URL() string { return Redact(c.NC.ConnectedUrl()) }

// Report reads each named stream and every consumer on it. A stream that
// cannot be read gets its Error and the others are still reported; the
// error returned is ctx's only.
func (c *Conn) Report(ctx context.Context, streams []string) ([]StreamReport, error) {
	out := make([]StreamReport, 0, len(streams))
	for _, name := range streams {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		out = append(out, streamReport(ctx, c.JS, name))
	}
	return out, nil
}

func streamReport(ctx context.Context, js jetstream.JetStream, name string) StreamReport {
	r := StreamReport{Name: name, Subjects: []string{}, Consumers: []ConsumerReport{}}
	st, err := js.Stream(ctx, name)
	if err != nil {
		r.Error = err.Error()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			r.Missing = true
			r.Error = "stream not found (the Millrace server or worker that uses it creates it at start)"
		}
		return r
	}
	si, err := st.Info(ctx)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Subjects = si.Config.Subjects
	r.Storage = si.Config.Storage.String()
	r.Replicas = si.Config.Replicas
	r.Cluster = peers(si.Cluster)
	r.Messages, r.Bytes = si.State.Msgs, si.State.Bytes
	r.FirstSeq, r.LastSeq = si.State.FirstSeq, si.State.LastSeq
	r.Deleted = si.State.NumDeleted
	if si.State.Lost != nil {
		r.Lost, r.LostBytes = uint64(len(si.State.Lost.Msgs)), si.State.Lost.Bytes
	}
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		r.Consumers = append(r.Consumers, consumerReport(name, ci, si.State.Msgs))
	}
	if err := lister.Err(); err != nil {
		r.Error = err.Error()
	}
	sort.Slice(r.Consumers, func(i, j int) bool { return r.Consumers[i].Name < r.Consumers[j].Name })
	return r
}

func consumerReport(stream string, ci *jetstream.ConsumerInfo, streamMsgs uint64) ConsumerReport {
	mode := "Pull"
	if ci.Config.DeliverSubject != "" {
		mode = "Push"
	}
	filters := ci.Config.FilterSubjects
	if ci.Config.FilterSubject != "" {
		filters = append([]string{ci.Config.FilterSubject}, filters...)
	}
	cr := ConsumerReport{
		Stream: stream, Name: ci.Name, Mode: mode, FilterSubjects: filters,
		AckPolicy: ci.Config.AckPolicy.String(), AckWait: ci.Config.AckWait,
		MaxDeliver: ci.Config.MaxDeliver, MaxAckPending: ci.Config.MaxAckPending,
		AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered,
		Unprocessed: ci.NumPending, AckFloor: ci.AckFloor.Stream, Waiting: ci.NumWaiting,
		Lag:     ci.NumPending + uint64(max(ci.NumAckPending, 0)),
		Cluster: peers(ci.Cluster),
	}
	if ci.Delivered.Last != nil {
		t := ci.Delivered.Last.UTC()
		cr.LastActive = &t
	}
	cr.Delivered = ci.Delivered.Consumer
	if streamMsgs > 0 {
		cr.UnprocessedPct = float64(ci.NumPending) * 100 / float64(streamMsgs)
	}
	return cr
}

func peers(ci *jetstream.ClusterInfo) *Peers {
	if ci == nil || (ci.Leader == "" && len(ci.Replicas) == 0) {
		return nil
	}
	p := &Peers{Name: ci.Name, Leader: ci.Leader, Replicas: []Peer{}}
	for _, r := range ci.Replicas {
		if r == nil {
			continue
		}
		p.Replicas = append(p.Replicas, Peer{Name: r.Name, Current: r.Current, Offline: r.Offline, Active: r.Active, Lag: r.Lag})
	}
	return p
}
