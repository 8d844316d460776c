package tools

import (
	"context"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	natsTestUser     = "worker"
	natsTestPassword = "s3cret-pw"
	natsTestCred     = "nats_credential"
)

// natsBundle is an embedded NATS server that requires a password, a ctx
// whose Env holds a credential for it, and a direct JetStream client for
// checking what the tool did.
type natsBundle struct {
	srv *bus.Embedded
	ctx context.Context
	js  jetstream.JetStream
}

func natsSetup(t *testing.T) *natsBundle {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1, User: natsTestUser, Password: natsTestPassword})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.URLWithCredentials())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	env := &seamEnv{creds: map[string]map[string]any{
		natsTestCred: {"url": srv.URL(), "user": natsTestUser, "password": natsTestPassword},
	}}
	return &natsBundle{srv: srv, ctx: WithEnv(t.Context(), env), js: js}
}

func natsCfg(op string, kv ...any) map[string]any {
	cfg := map[string]any{"kind": "nats", "auth": natsTestCred, "operation": op}
	for i := 0; i+1 < len(kv); i += 2 {
		cfg[kv[i].(string)] = kv[i+1]
	}
	return cfg
}

// stored returns the raw bytes of bucket/key as NATS holds them.
func (b *natsBundle) stored(t *testing.T, bucket, key string) []byte {
	t.Helper()
	kv, err := b.js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatalf("bucket %s: %v", bucket, err)
	}
	e, err := kv.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	return e.Value()
}

func TestNATSKVRoundTrip(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	// test_nats_kv.yaml: put a session (creating the bucket), get it back,
	// delete it.
	session := map[string]any{"session_token": "test_session_123", "user_id": 1.0, "is_active": true}
	put := runOK(t, b.ctx, natsCfg("kv_put", "bucket", "sessions", "key", "test_session_123", "value", session))
	if !reflect.DeepEqual(put, map[string]any{"key": "test_session_123", "revision": uint64(1)}) {
		t.Fatalf("kv_put = %#v", put)
	}
	var raw map[string]any
	if err := json.Unmarshal(b.stored(t, "sessions", "test_session_123"), &raw); err != nil || !reflect.DeepEqual(raw, session) {
		t.Fatalf("stored %v (%v), want the session as JSON", raw, err)
	}

	got := runOK(t, b.ctx, natsCfg("kv_get", "bucket", "sessions", "key", "test_session_123"))
	want := map[string]any{"key": "test_session_123", "revision": uint64(1), "found": true,
		"value": map[string]any{"session_token": "test_session_123", "user_id": json.Number("1"), "is_active": true}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("kv_get = %#v, want %#v", got, want)
	}

	del := runOK(t, b.ctx, natsCfg("kv_delete", "bucket", "sessions", "key", "test_session_123"))
	if !reflect.DeepEqual(del, map[string]any{"key": "test_session_123", "deleted": true}) {
		t.Fatalf("kv_delete = %#v", del)
	}
	gone := runOK(t, b.ctx, natsCfg("kv_get", "bucket", "sessions", "key", "test_session_123"))
	if !reflect.DeepEqual(gone, map[string]any{"key": "test_session_123", "value": nil, "found": false}) {
		t.Fatalf("kv_get after delete = %#v, want found false", gone)
	}
}

func TestNATSValueEncoding(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	for i, tc := range []struct {
		value  any
		stored string
		got    any
	}{
		{"plain text", "plain text", "plain text"}, // a string is stored as-is
		{`{"pre":"encoded"}`, `{"pre":"encoded"}`, map[string]any{"pre": "encoded"}},
		{[]any{1.0, "a"}, `[1,"a"]`, []any{json.Number("1"), "a"}},
		{json.Number("9007199254740993"), "9007199254740993", json.Number("9007199254740993")},
		{nil, "null", nil},
		{"1 2", "1 2", "1 2"}, // not one JSON document: stays a string
	} {
		key := "k" + string(rune('a'+i))
		runOK(t, b.ctx, natsCfg("kv_put", "bucket", "enc", "key", key, "value", tc.value))
		if s := string(b.stored(t, "enc", key)); s != tc.stored {
			t.Errorf("value %#v stored as %q, want %q", tc.value, s, tc.stored)
		}
		got := runOK(t, b.ctx, natsCfg("kv_get", "bucket", "enc", "key", key))
		if !reflect.DeepEqual(got["value"], tc.got) {
			t.Errorf("value %#v read back as %#v, want %#v", tc.value, got["value"], tc.got)
		}
	}
}

func TestNATSMissingBucket(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	for _, cfg := range []map[string]any{
		natsCfg("kv_put", "bucket", "nope", "key", "k", "value", 1.0, "create_bucket", false),
		natsCfg("kv_put", "bucket", "nope", "key", "k", "value", 1.0, "create_bucket", "false"),
		natsCfg("kv_get", "bucket", "nope", "key", "k"),
		natsCfg("kv_delete", "bucket", "nope", "key", "k"),
	} {
		e := runErr(t, b.ctx, cfg)
		if e.Kind != "nats" || e.Retryable || !strings.Contains(e.Message, `bucket "nope" does not exist`) {
			t.Errorf("%v: error = %+v, want non-retryable missing-bucket error", cfg["operation"], e)
		}
	}
	if _, err := b.js.KeyValue(t.Context(), "nope"); err == nil {
		t.Fatal("bucket nope was created despite create_bucket false")
	}
}

func TestNATSInvalidKey(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	e := runErr(t, b.ctx, natsCfg("kv_put", "bucket", "b", "key", "has space", "value", "v"))
	if e.Kind != "nats" || e.Retryable || !strings.Contains(e.Message, `invalid key "has space"`) {
		t.Fatalf("error = %+v, want non-retryable invalid key", e)
	}
}

func TestNATSPublish(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	ctx := t.Context()
	stream, err := b.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for seq, data := range []any{map[string]any{"id": 7.0}, "raw text"} {
		got := runOK(t, b.ctx, natsCfg("publish", "subject", "orders.new", "data", data))
		if !reflect.DeepEqual(got, map[string]any{"stream": "ORDERS", "sequence": uint64(seq + 1)}) {
			t.Fatalf("publish %d = %#v", seq, got)
		}
	}
	for seq, want := range []string{`{"id":7}`, "raw text"} {
		msg, err := stream.GetMsg(ctx, uint64(seq+1))
		if err != nil || string(msg.Data) != want || msg.Subject != "orders.new" {
			t.Fatalf("message %d = %v %q (%v), want %q on orders.new", seq+1, msg, msg.Data, err, want)
		}
	}
	// NoETL's name for the operation works too.
	if got := runOK(t, b.ctx, natsCfg("js_publish", "subject", "orders.old")); got["sequence"] != uint64(3) {
		t.Fatalf("js_publish = %#v, want sequence 3", got)
	}

	e := runErr(t, b.ctx, natsCfg("publish", "subject", "nobody.listens", "data", "x"))
	if e.Kind != "nats" || e.Retryable || !strings.Contains(e.Message, `no JetStream stream stores subject "nobody.listens"`) {
		t.Fatalf("publish without a stream: %+v, want non-retryable hint to create a stream", e)
	}
}

func TestNATSDirectURL(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	// No auth: the url carries the user and password; no Env is needed.
	cfg := map[string]any{"kind": "nats", "url": b.srv.URLWithCredentials(), "operation": "kv_put",
		"bucket": "direct", "key": "k", "value": "v"}
	if got := runOK(t, t.Context(), cfg); got["revision"] != uint64(1) {
		t.Fatalf("kv_put via url = %#v", got)
	}
}

func TestNATSCredentialForms(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	env := &seamEnv{creds: map[string]map[string]any{
		// servers as a list and username, as NoETL credentials may have.
		"list":  {"servers": []any{b.srv.URL()}, "username": natsTestUser, "password": natsTestPassword},
		"bad":   {"url": b.srv.URL(), "user": natsTestUser, "password": "wrong-" + natsTestPassword},
		"nourl": {"user": natsTestUser},
	}}
	ctx := WithEnv(t.Context(), env)
	cfg := func(auth string) map[string]any {
		c := natsCfg("kv_get", "bucket", "any", "key", "k")
		c["auth"] = auth
		return c
	}
	// The list credential connects; the bucket is missing, which proves it.
	if e := runErr(t, ctx, cfg("list")); !strings.Contains(e.Message, "does not exist") {
		t.Fatalf("servers list credential: %+v, want to reach the server", e)
	}
	e := runErr(t, ctx, cfg("bad"))
	if e.Kind != "nats" || e.Retryable || !strings.Contains(strings.ToLower(e.Message), "authorization") {
		t.Fatalf("wrong password: %+v, want non-retryable authorization error", e)
	}
	if strings.Contains(e.Message, natsTestPassword) {
		t.Fatalf("message %q leaks the password", e.Message)
	}
	if e := runErr(t, ctx, cfg("nourl")); e.Kind != ErrorKindConfig || !strings.Contains(e.Message, `credential "nourl" has no url`) {
		t.Fatalf("credential without url: %+v", e)
	}
	if e := runErr(t, ctx, cfg("missing")); e.Kind != "nats" || !strings.Contains(e.Message, `cannot load credential "missing"`) {
		t.Fatalf("unknown credential: %+v", e)
	}
	if e := runErr(t, t.Context(), cfg("list")); e.Kind != ErrorKindConfig || !strings.Contains(e.Message, "only a worker provides") {
		t.Fatalf("auth without an Env: %+v", e)
	}
}

func TestNATSUnreachableIsRetryable(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: bind one, then free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	e := runErr(t, t.Context(), map[string]any{"kind": "nats", "url": "nats://u:hunter2@" + addr,
		"operation": "kv_get", "bucket": "b", "key": "k"})
	if e.Kind != "nats" || !e.Retryable || !strings.Contains(e.Message, "cannot connect to NATS at nats://"+addr) {
		t.Fatalf("error = %+v, want retryable connection error naming the server", e)
	}
	if strings.Contains(e.Message, "hunter2") {
		t.Fatalf("message %q leaks the url's password", e.Message)
	}
	if elapsed := time.Since(start); elapsed > NATSConnectTimeout+2*time.Second {
		t.Fatalf("took %s to fail", elapsed)
	}
}

func TestNATSCanceled(t *testing.T) {
	t.Parallel()
	b := natsSetup(t)
	ctx, cancel := context.WithCancel(b.ctx)
	cancel()
	e := runErr(t, ctx, natsCfg("kv_get", "bucket", "b", "key", "k"))
	if e.Kind != ErrorKindCanceled || !e.Retryable {
		t.Fatalf("error = %+v, want retryable %q", e, ErrorKindCanceled)
	}
}

func TestNATSBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"kind": "nats", "url": "nats://x"}, `"operation" is required`},
		{natsCfg("kv_list"), `"operation" must be kv_get, kv_put, kv_delete or publish, got "kv_list"`},
		{natsCfg("kv_get", "key", "k"), `"bucket" is required`},
		{natsCfg("kv_get", "bucket", "b"), `"key" is required`},
		{natsCfg("kv_put", "bucket", "b", "key", "k"), `"value" is required for kv_put`},
		{natsCfg("kv_put", "bucket", "b", "key", "k", "value", 1.0, "create_bucket", "yes"), `"create_bucket" must be true or false`},
		{natsCfg("publish", "data", "x"), `"subject" is required`},
		{map[string]any{"kind": "nats", "operation": "kv_get", "bucket": "b", "key": "k"}, `"url" or "auth" is required`},
		{natsCfg("kv_get", "bucket", "b", "key", "k", "auth", 3.0), `"auth" must be a string`},
	} {
		e := runErr(t, t.Context(), tc.cfg)
		if e.Kind != ErrorKindConfig || e.Retryable || !strings.Contains(e.Message, tc.want) {
			t.Errorf("Run(%v) = %+v, want config error containing %q", tc.cfg, e, tc.want)
		}
	}
}
