package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// NATSConnectTimeout bounds dialing each NATS server.
	NATSConnectTimeout = 5 * time.Second
	// NATSOpTimeout bounds one KV or publish operation once connected.
	NATSOpTimeout = 30 * time.Second
	// natsClientName shows up in the server's connection list.
	natsClientName = "millrace-nats-tool"
)

// NATS tool operations. natsOpJSPublish is NoETL's name for publish.
const (
	natsOpKVGet     = "kv_get"
	natsOpKVPut     = "kv_put"
	natsOpKVDelete  = "kv_delete"
	natsOpPublish   = "publish"
	natsOpJSPublish = "js_publish"
)

var natsKeys = []string{"auth", "url", "operation", "bucket", "key", "value", "subject", "data", "create_bucket"}

// natsTool reads and writes JetStream key-value buckets and publishes to
// JetStream. It connects per call: steps are infrequent next to a
// connection's cost, and a connection per step keeps credentials separate.
type natsTool struct{}

// natsCall is a parsed nats tool config.
type natsCall struct {
	op           string
	auth         string // credential name, "" when url is given directly
	bucket, key  string
	subject      string
	payload      []byte
	createBucket bool
}

func (natsTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	call, err := parseNATSCall(cfg)
	if err != nil {
		return nil, err
	}
	target, err := natsTarget(ctx, cfg, call.auth)
	if err != nil {
		return nil, err
	}

	nc, err := nats.Connect(target.servers, target.options()...)
	if err != nil {
		return nil, call.fail(ctx, nil, fmt.Errorf("cannot connect to NATS at %s: %w", target.redacted(), err))
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, call.fail(ctx, nil, err)
	}
	opCtx, cancel := context.WithTimeout(ctx, NATSOpTimeout)
	defer cancel()

	res, err := call.run(opCtx, js)
	if err != nil {
		return nil, call.fail(ctx, opCtx, err)
	}
	return res, nil
}

func (c *natsCall) run(ctx context.Context, js jetstream.JetStream) (map[string]any, error) {
	if c.op == natsOpPublish {
		ack, err := js.Publish(ctx, c.subject, c.payload)
		if err != nil {
			return nil, err
		}
		return map[string]any{"stream": ack.Stream, "sequence": ack.Sequence}, nil
	}

	kv, err := js.KeyValue(ctx, c.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && c.op == natsOpKVPut && c.createBucket {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: c.bucket})
		if errors.Is(err, jetstream.ErrBucketExists) {
			// Another step created it first.
			kv, err = js.KeyValue(ctx, c.bucket)
		}
	}
	if err != nil {
		return nil, err
	}

	switch c.op {
	case natsOpKVGet:
		entry, err := kv.Get(ctx, c.key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			// A missing key is an answer, not a failure: `when` can test it.
			return map[string]any{"key": c.key, "value": nil, "found": false}, nil
		}
		if err != nil {
			return nil, err
		}
		return map[string]any{"key": c.key, "value": decodeNATSValue(entry.Value()),
			"revision": entry.Revision(), "found": true}, nil
	case natsOpKVPut:
		rev, err := kv.Put(ctx, c.key, c.payload)
		if err != nil {
			return nil, err
		}
		return map[string]any{"key": c.key, "revision": rev}, nil
	default: // natsOpKVDelete
		if err := kv.Delete(ctx, c.key); err != nil {
			return nil, err
		}
		return map[string]any{"key": c.key, "deleted": true}, nil
	}
}

// fail turns an operation error into an *Error. Trouble reaching NATS is
// retryable; a request NATS understood and refused is not.
func (c *natsCall) fail(ctx, opCtx context.Context, err error) error {
	what := c.describe()
	retry := func(msg string) error { return &Error{Kind: "nats", Retryable: true, Message: msg} }
	final := func(msg string) error { return &Error{Kind: "nats", Message: msg} }
	var apiErr *jetstream.APIError
	switch {
	case ctx.Err() != nil:
		return &Error{Kind: ErrorKindCanceled, Retryable: true,
			Message: fmt.Sprintf("%s was stopped because the worker canceled it: %v", what, context.Cause(ctx))}
	case opCtx != nil && opCtx.Err() != nil:
		return retry(fmt.Sprintf("%s timed out after %s; check the NATS server's health", what, NATSOpTimeout))
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return final(fmt.Sprintf("%s: %v; check the user, password or token in the credential or url", what, err))
	case errors.Is(err, nats.ErrPermissionViolation):
		return final(fmt.Sprintf("%s: %v; the NATS user lacks permission for this subject or bucket", what, err))
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return final(fmt.Sprintf("%s: %v; enable JetStream on the NATS server (nats-server -js)", what, err))
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return final(fmt.Sprintf("%s: bucket %q does not exist; create it, or write to it first with kv_put (create_bucket defaults to true)", what, c.bucket))
	case errors.Is(err, jetstream.ErrInvalidBucketName):
		return final(fmt.Sprintf("%s: invalid bucket name %q; use letters, digits, '-' and '_'", what, c.bucket))
	case errors.Is(err, jetstream.ErrInvalidKey):
		return final(fmt.Sprintf("%s: invalid key %q; use letters, digits and '-', '_', '/', '=', '.' (not at either end)", what, c.key))
	case errors.Is(err, nats.ErrBadSubject):
		return final(fmt.Sprintf("%s: invalid subject %q", what, c.subject))
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return final(fmt.Sprintf("%s: no JetStream stream stores subject %q; create a stream whose subjects include it", what, c.subject))
	case errors.Is(err, nats.ErrMaxPayload):
		return final(fmt.Sprintf("%s: %v; the value is larger than the server's max_payload", what, err))
	case errors.As(err, &apiErr) && apiErr.Code != 503:
		// JetStream understood and refused the request (limits, config).
		return final(fmt.Sprintf("%s: %v", what, err))
	case errors.Is(err, nats.ErrNoServers):
		return retry(fmt.Sprintf("%s: %v; check that the NATS server is running and reachable from the worker", what, err))
	}
	return retry(fmt.Sprintf("%s: %v", what, err))
}

func (c *natsCall) describe() string {
	switch c.op {
	case natsOpPublish:
		return fmt.Sprintf("nats publish to %q", c.subject)
	case natsOpKVGet, natsOpKVPut, natsOpKVDelete:
		return fmt.Sprintf("nats %s %s/%s", c.op, c.bucket, c.key)
	}
	return "nats " + c.op
}

func parseNATSCall(cfg map[string]any) (*natsCall, error) {
	c := &natsCall{}
	var err error
	if c.op, err = optString(cfg, "nats", "operation", ""); err != nil {
		return nil, err
	}
	const ops = "kv_get, kv_put, kv_delete or publish"
	switch c.op {
	case natsOpKVGet, natsOpKVPut, natsOpKVDelete, natsOpPublish:
	case natsOpJSPublish:
		c.op = natsOpPublish
	case "":
		return nil, configError("nats", "operation", "is required: give %s", ops)
	default:
		return nil, configError("nats", "operation", "must be %s, got %q", ops, c.op)
	}
	if c.auth, err = optString(cfg, "nats", "auth", ""); err != nil {
		return nil, err
	}

	if c.op == natsOpPublish {
		if c.subject, err = requiredString(cfg, "nats", "subject", "the subject to publish to"); err != nil {
			return nil, err
		}
		if c.payload, err = natsPayload(cfg, "data"); err != nil {
			return nil, err
		}
		return c, nil
	}

	if c.bucket, err = requiredString(cfg, "nats", "bucket", "the key-value bucket"); err != nil {
		return nil, err
	}
	if c.key, err = requiredString(cfg, "nats", "key", "the key within the bucket"); err != nil {
		return nil, err
	}
	if c.op == natsOpKVPut {
		if _, ok := cfg["value"]; !ok {
			return nil, configError("nats", "value", "is required for kv_put: give the value to store")
		}
		if c.payload, err = natsPayload(cfg, "value"); err != nil {
			return nil, err
		}
		if c.createBucket, err = optBoolean(cfg, "nats", "create_bucket", true); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// natsPayload encodes cfg[key]: a string is sent as-is, anything else as
// JSON, so that kv_get (which decodes JSON) returns what was put.
func natsPayload(cfg map[string]any, key string) ([]byte, error) {
	v, ok := cfg[key]
	if !ok {
		return nil, nil
	}
	if s, ok := v.(string); ok {
		return []byte(s), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, configError("nats", key, "cannot be encoded as JSON: %v", err)
	}
	return b, nil
}

// decodeNATSValue returns the JSON value stored, or the bytes as a string
// when they are not one JSON document.
func decodeNATSValue(b []byte) any {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep 64-bit ids exact
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(b)
	}
	if _, err := dec.Token(); err != io.EOF {
		return string(b) // trailing data, e.g. "1 2"
	}
	return v
}

// natsTargetInfo is where and as whom to connect.
type natsTargetInfo struct {
	servers               string // comma-separated URLs, as nats.Connect takes
	user, password, token string
}

func (t natsTargetInfo) options() []nats.Option {
	opts := []nats.Option{
		nats.Name(natsClientName),
		nats.Timeout(NATSConnectTimeout),
		// A short-lived connection should fail over to a retry of the step,
		// not wait out a reconnect.
		nats.NoReconnect(),
	}
	if t.user != "" {
		opts = append(opts, nats.UserInfo(t.user, t.password))
	}
	if t.token != "" {
		opts = append(opts, nats.Token(t.token))
	}
	return opts
}

// redacted lists the servers without credentials, for messages.
func (t natsTargetInfo) redacted() string {
	parts := strings.Split(t.servers, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.Host != "" {
			p = redactURL(u)
		} else if at := strings.LastIndexByte(p, '@'); at >= 0 {
			p = p[at+1:]
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// natsTarget resolves the connection: url directly, or the named credential
// (fields url or servers, user, password, token). A url given alongside
// auth overrides the credential's.
func natsTarget(ctx context.Context, cfg map[string]any, auth string) (natsTargetInfo, error) {
	direct, err := optString(cfg, "nats", "url", "")
	if err != nil {
		return natsTargetInfo{}, err
	}
	t := natsTargetInfo{servers: direct}
	if auth != "" {
		fields, err := credentialFields(ctx, "nats", auth)
		if err != nil {
			return natsTargetInfo{}, err
		}
		if t.servers == "" {
			if t.servers, err = credentialServers(fields, auth); err != nil {
				return natsTargetInfo{}, err
			}
		}
		for _, f := range []struct {
			dst   *string
			names []string
		}{
			{&t.user, []string{"user", "username"}},
			{&t.password, []string{"password"}},
			{&t.token, []string{"token"}},
		} {
			for _, name := range f.names {
				if s, ok := scalarString(fields[name]); ok && s != "" {
					*f.dst = s
					break
				}
			}
		}
	}
	if t.servers == "" {
		if auth != "" {
			return natsTargetInfo{}, &Error{Kind: ErrorKindConfig, Message: fmt.Sprintf(
				"nats tool: credential %q has no url or servers field; add one (e.g. nats://host:4222) or set url on the step", auth)}
		}
		return natsTargetInfo{}, configError("nats", "url", "or \"auth\" is required: give the NATS url or a credential name")
	}
	return t, nil
}

// credentialServers reads url, servers or nats_url (NoETL's name): a string
// or a list of strings.
func credentialServers(fields map[string]any, name string) (string, error) {
	for _, key := range []string{"url", "servers", "nats_url"} {
		switch v := fields[key].(type) {
		case nil:
			continue
		case string:
			if v != "" {
				return v, nil
			}
		case []any:
			var list []string
			for _, item := range v {
				s, ok := item.(string)
				if !ok {
					return "", &Error{Kind: ErrorKindConfig, Message: fmt.Sprintf(
						"nats tool: credential %q field %q must list URL strings, got %s", name, key, describe(item))}
				}
				list = append(list, s)
			}
			if len(list) > 0 {
				return strings.Join(list, ","), nil
			}
		default:
			return "", &Error{Kind: ErrorKindConfig, Message: fmt.Sprintf(
				"nats tool: credential %q field %q must be a URL or a list of them, got %s", name, key, describe(v))}
		}
	}
	return "", nil
}

// credentialFields loads the named credential through the worker's Env.
func credentialFields(ctx context.Context, kind, name string) (map[string]any, error) {
	env := EnvFrom(ctx)
	if env == nil {
		return nil, &Error{Kind: ErrorKindConfig, Message: fmt.Sprintf(
			"%s tool: auth %q needs credentials, which only a worker provides; run the step on a worker or give a url", kind, name)}
	}
	fields, err := env.Credential(ctx, name)
	if err != nil {
		var te *Error
		if errors.As(err, &te) {
			return nil, te
		}
		return nil, &Error{Kind: kind, Message: fmt.Sprintf(
			"cannot load credential %q: %v; check that it exists (millrace credential list)", name, err)}
	}
	return fields, nil
}

// requiredString returns cfg[key], a non-empty string.
func requiredString(cfg map[string]any, kind, key, what string) (string, error) {
	s, err := optString(cfg, kind, key, "")
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", configError(kind, key, "is required: give %s", what)
	}
	return s, nil
}

// optBoolean returns cfg[key] as a bool, or def when absent or null. A
// rendered template may give "true" or "false".
func optBoolean(cfg map[string]any, kind, key string, def bool) (bool, error) {
	switch v := cfg[key].(type) {
	case nil:
		return def, nil
	case bool:
		return v, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, configError(kind, key, "must be true or false, got %s", describe(cfg[key]))
}
