// Package bus owns everything about NATS JetStream on the command path:
// connecting, provisioning the command stream and the durable worker
// consumer, publishing command notifications, and an embedded nats-server
// for development and tests.
//
// NATS only carries small notifications that point at command.issued events;
// the event table stays the single source of truth. Losing a notification is
// therefore recoverable, but a wrongly configured stream (workqueue retention,
// subjects that do not cover the publish subject) silently stalls all work, so
// this package refuses to run against one and says how to fix it.
package bus

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

const (
	// DefaultURL is the NATS server used when NATS_URL is unset; it matches
	// a local `nats-server -js`.
	DefaultURL = "nats://127.0.0.1:4222"
	// DefaultStream is the JetStream stream holding command notifications.
	DefaultStream = "NOETL_COMMANDS"
	// DefaultSubject is the subject notifications are published on. The
	// stream also captures DefaultSubject+".>" so per-pool subjects can be
	// added without recreating it.
	DefaultSubject = "noetl.commands"
	// DefaultConsumer is the durable pull consumer shared by all workers of a
	// pool; each notification goes to one worker of the pool.
	DefaultConsumer = "noetl_worker_pool"
	// DefaultMaxAge bounds how long an unconsumed notification is kept. The
	// event table still has the command, so expiry loses no work.
	DefaultMaxAge = time.Hour
	// DefaultMaxBytes caps the stream's memory (limits retention keeps
	// acknowledged messages until max_age); 1 GiB as in the seeds' Helm
	// defaults. Zero or less means unlimited.
	DefaultMaxBytes = 1 << 30
	// DefaultMaxDeliver is how often a notification is redelivered before
	// JetStream gives up on it.
	DefaultMaxDeliver = 1000
	// DefaultMaxAckPending caps unacknowledged notifications across the pool,
	// which bounds how much work is in flight at once.
	DefaultMaxAckPending = 64
	// DefaultReplicas is one copy: right for a single NATS server, and
	// what the seeds' streams have. A 3-node cluster wants NATS_REPLICAS=3.
	DefaultReplicas = 1
	// MaxReplicas is JetStream's own limit on a stream's replicas.
	MaxReplicas = 5
	// DefaultAckWait is how long a worker may hold a notification before
	// JetStream redelivers it to another worker.
	DefaultAckWait = 30 * time.Second
	// DefaultFetchTimeout is how long one pull request waits for messages.
	DefaultFetchTimeout = 30 * time.Second
	// DefaultFetchHeartbeat is the idle heartbeat of a pull request; a
	// missing heartbeat reveals a dead connection long before the timeout.
	DefaultFetchHeartbeat = 5 * time.Second
	// DefaultStorage keeps notifications in memory: they are cheap to lose
	// (the event table is authoritative) and memory storage is fastest.
	DefaultStorage = StorageMemory
	// DefaultName is the client connection name shown by `nats server report
	// connections` when Config.Name is empty.
	DefaultName = "millrace"

	// DuplicateWindow is the stream's Nats-Msg-Id deduplication window. A
	// publisher retrying within it cannot create a second notification.
	DuplicateWindow = 2 * time.Minute
	// DefaultPublishAckTimeout bounds how long a single async publish waits
	// for its ack before it is reported as failed and may be retried.
	DefaultPublishAckTimeout = 10 * time.Second
	// DefaultPublishAttempts is how many rounds PublishBatch makes for
	// messages that failed with a transient error. Retries are safe because
	// messages carry a Nats-Msg-Id and the stream deduplicates them.
	DefaultPublishAttempts = 3

	// StorageMemory and StorageFile are the accepted Config.Storage values.
	StorageMemory = "memory"
	StorageFile   = "file"
)

// Config describes how to reach NATS and how the command stream and consumer
// are shaped. The zero value is not usable; start from DefaultConfig.
type Config struct {
	// URL is one NATS URL or a comma-separated list. It may carry
	// credentials (nats://user:pass@host:4222); User/Password override them.
	URL      string
	User     string
	Password string
	Stream   string
	Subject  string
	Consumer string
	// Storage is StorageMemory or StorageFile; it only applies when this
	// package creates the stream.
	Storage        string
	MaxAge         time.Duration
	MaxBytes       int64
	MaxDeliver     int
	MaxAckPending  int
	AckWait        time.Duration
	FetchTimeout   time.Duration
	FetchHeartbeat time.Duration
	// Name is the client connection name; DefaultName when empty.
	Name string
	// TLS and credentials beyond user/password (nats.go's options): a CA
	// to trust, a client certificate and key, a .creds file (JWT) or an
	// nkey seed file. Empty means unused.
	TLSCA, TLSCert, TLSKey string
	CredsFile, NKeyFile    string
	// Replicas of every stream, KV bucket and object store Millrace
	// creates (NATS_REPLICAS, 1..MaxReplicas). Existing ones keep theirs.
	Replicas int
	// Pool is the worker pool whose commands the consumer takes (pool.go):
	// "" is the default pool, AllPools every pool (millrace dev).
	Pool string
}

// Live-update and gateway subjects (the NoETL gateway contract).
const (
	// DefaultUpdatesPrefix prefixes the subject the server publishes an
	// execution's lifecycle events on, after commit: <prefix><execution_id>.
	DefaultUpdatesPrefix = "playbooks.executions."
	// DefaultCallbackPrefix prefixes the subject execute-and-wait results
	// fan out on between gateway replicas: <prefix>.<request_id>.
	DefaultCallbackPrefix = "noetl.callbacks"
	DefaultSessionBucket  = "sessions"
	DefaultRequestBucket  = "requests"
)

// DefaultConfig returns the configuration matching the seeds' runtime contract.
func DefaultConfig() Config {
	return Config{
		URL:            DefaultURL,
		Stream:         DefaultStream,
		Subject:        DefaultSubject,
		Consumer:       DefaultConsumer,
		Storage:        DefaultStorage,
		MaxAge:         DefaultMaxAge,
		MaxBytes:       DefaultMaxBytes,
		MaxDeliver:     DefaultMaxDeliver,
		MaxAckPending:  DefaultMaxAckPending,
		AckWait:        DefaultAckWait,
		FetchTimeout:   DefaultFetchTimeout,
		FetchHeartbeat: DefaultFetchHeartbeat,
		Name:           DefaultName,
		Replicas:       DefaultReplicas,
	}
}

// ValidateConnection reports every problem with the settings needed to
// reach NATS (URL, user and password, TLS, credentials files), ignoring the
// command stream's contract. It is enough for a plain connection
// (ConnectOnly), as the gateway makes.
func (c Config) ValidateConnection() error {
	if errs := c.connectionErrors(); len(errs) > 0 {
		return fmt.Errorf("invalid NATS configuration: %w", errors.Join(errs...))
	}
	return nil
}

func (c Config) connectionErrors() []error {
	var errs []error
	if _, err := serverURLs(c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, errors.New("NATS_PASSWORD is set but NATS_USER is empty; set both or neither"))
	}
	return append(errs, c.validateSecurity()...)
}

// Validate reports every problem in c at once, naming the environment
// variable a user would change.
func (c Config) Validate() error {
	errs := c.connectionErrors()
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if err := validName(c.Stream); err != nil {
		add("stream name (NATS_STREAM) %q: %v", c.Stream, err)
	}
	if err := validName(c.Consumer); err != nil {
		add("consumer name (NATS_CONSUMER) %q: %v", c.Consumer, err)
	}
	if err := validPublishSubject(c.Subject); err != nil {
		add("subject (NATS_SUBJECT) %q: %v", c.Subject, err)
	}
	if c.Pool != AllPools {
		if err := CheckPool(c.Pool); err != nil {
			add("worker pool (MILLRACE_WORKER_POOL) %q: %v", c.Pool, err)
		}
	}
	if c.Storage != StorageMemory && c.Storage != StorageFile {
		add("storage %q: must be %q or %q", c.Storage, StorageMemory, StorageFile)
	}
	if c.MaxAge < 0 {
		add("max age %v: must be >= 0 (0 keeps notifications forever)", c.MaxAge)
	}
	// -1 is JetStream's "unlimited" for both.
	if c.MaxDeliver == 0 || c.MaxDeliver < -1 {
		add("max deliver %d: must be >= 1, or -1 for unlimited", c.MaxDeliver)
	}
	if c.MaxAckPending == 0 || c.MaxAckPending < -1 {
		add("max ack pending %d: must be >= 1, or -1 for unlimited", c.MaxAckPending)
	}
	if c.AckWait <= 0 {
		add("ack wait %v: must be > 0", c.AckWait)
	}
	if c.FetchTimeout <= 0 {
		add("fetch timeout %v: must be > 0", c.FetchTimeout)
	}
	if c.Replicas < 1 || c.Replicas > MaxReplicas {
		add("replicas (NATS_REPLICAS) %d: must be 1 to %d; use 1 on a single NATS server and 3 on a 3-node cluster", c.Replicas, MaxReplicas)
	}
	if c.FetchHeartbeat < 0 {
		add("fetch heartbeat %v: must be >= 0 (0 disables it)", c.FetchHeartbeat)
	}
	// nats.go rejects pull requests whose expiry is under two heartbeats.
	if c.FetchTimeout > 0 && c.FetchTimeout < 2*c.FetchHeartbeat {
		add("fetch timeout %v must be at least twice the fetch heartbeat %v", c.FetchTimeout, c.FetchHeartbeat)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid NATS configuration: %w", errors.Join(errs...))
	}
	return nil
}

// serverURLs splits and parses a comma-separated URL list.
func serverURLs(s string) ([]*url.URL, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("NATS_URL is empty; set it to e.g. " + DefaultURL)
	}
	var out []*url.URL
	for raw := range strings.SplitSeq(s, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil {
			// url's error quotes the whole entry, password and all.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("NATS_URL entry %q is not a URL: %v", Redact(raw), err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return nil, fmt.Errorf("NATS_URL entry %q: scheme must be nats://, tls://, ws:// or wss://", Redact(raw))
		}
		if u.Host == "" {
			return nil, fmt.Errorf("NATS_URL entry %q has no host; use e.g. %s", Redact(raw), DefaultURL)
		}
		out = append(out, u)
	}
	return out, nil
}

// validName checks a stream or durable consumer name. JetStream uses names
// as subject tokens, so these characters would break its API subjects.
func validName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if i := strings.IndexAny(s, ". *>\t\r\n/\\"); i >= 0 {
		return fmt.Errorf("must not contain %q", s[i])
	}
	return nil
}

// validPublishSubject checks a literal subject: non-empty dot-separated
// tokens without wildcards, since we publish to it.
func validPublishSubject(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return errors.New("must not contain whitespace")
	}
	for tok := range strings.SplitSeq(s, ".") {
		switch tok {
		case "":
			return errors.New("must not have empty tokens (leading, trailing or double dots)")
		case "*", ">":
			return errors.New("must not contain wildcards; it is a publish subject")
		}
	}
	return nil
}

// subjectMatches reports whether the literal subject subj is matched by the
// NATS subject pattern pattern (which may use * and >).
func subjectMatches(pattern, subj string) bool {
	pt := strings.Split(pattern, ".")
	st := strings.Split(subj, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) {
			return false
		}
		if p != "*" && p != st[i] {
			return false
		}
	}
	return len(pt) == len(st)
}
