package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCommandID(t *testing.T) {
	t.Parallel()
	cases := []struct {
		exec, event int64
		step        string
		want        string
	}{
		{123, 124, "step", "123:step:124"},
		{7341234567890123, 7341234567890124, "fetch:page", "7341234567890123:fetch:page:7341234567890124"},
		{1, 2, "a:b:c", "1:a:b:c:2"},
	}
	for _, tc := range cases {
		got := CommandID(tc.exec, tc.step, tc.event)
		if got != tc.want {
			t.Errorf("CommandID(%d, %q, %d) = %q, want %q", tc.exec, tc.step, tc.event, got, tc.want)
		}
		exec, step, event, err := ParseCommandID(got)
		if err != nil || exec != tc.exec || step != tc.step || event != tc.event {
			t.Errorf("ParseCommandID(%q) = %d, %q, %d, %v", got, exec, step, event, err)
		}
	}
}

// The first notification keeps the command id as its Nats-Msg-Id (what
// workers and the seeds' contract see); later ones must differ from it and
// from each other, or JetStream's duplicate window would drop them.
func TestNotifyMsgID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		publishes int
		want      string
	}{{0, "1:s:2"}, {1, "1:s:2"}, {2, "1:s:2#2"}, {17, "1:s:2#17"}} {
		if got := NotifyMsgID("1:s:2", tc.publishes); got != tc.want {
			t.Errorf("NotifyMsgID(1:s:2, %d) = %q, want %q", tc.publishes, got, tc.want)
		}
	}
}

func TestParseCommandIDErrors(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "123", "123:step", // the seeds' older two-part form is not a command id
		":step:1", "1:step:", "1::2", "0:step:1", "1:step:0", "01:step:2", "-1:step:2",
		"+1:step:2", "1:step:2x", "99999999999999999999:step:1",
	} {
		if _, _, _, err := ParseCommandID(s); err == nil {
			t.Errorf("ParseCommandID(%q) succeeded", s)
		}
	}
}

func TestNotificationRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []Notification{
		testNotification(123, 124, "step"),
		testNotification(7341234567890123, 7341234567890124, "step_name"),
		testNotification(1<<62, 1, `weird "step" \ with / ctl`+"\x00\x1f\t\n\u2028é🚀"),
		{ExecutionID: 5, EventID: 6, CommandID: "5:a:b:6", Step: "a:b", ServerURL: "https://noetl.noetl.svc.cluster.local:8082/base?x=<&>"},
	} {
		b := n.Encode()
		if !json.Valid(b) {
			t.Fatalf("Encode(%+v) = %s is not valid JSON", n, b)
		}
		got, err := DecodeNotification(b)
		if err != nil {
			t.Fatalf("DecodeNotification(%s): %v", b, err)
		}
		if got != n {
			t.Fatalf("round trip: got %+v, want %+v", got, n)
		}
	}
}

func TestNotificationEncodeMatchesContract(t *testing.T) {
	t.Parallel()
	got := string(testNotification(123, 124, "step").Encode())
	want := `{"execution_id":123,"event_id":124,"command_id":"123:step:124","step":"step","server_url":"http://127.0.0.1:8082"}`
	if got != want {
		t.Fatalf("Encode = %s\nwant     %s", got, want)
	}
}

// stdEncode is what encoding/json produces without HTML escaping.
func stdEncode(t testing.TB, n Notification) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(n); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func FuzzNotificationEncode(f *testing.F) {
	f.Add(int64(1), int64(2), "step", "http://x", "1:step:2")
	f.Add(int64(-1), int64(0), "\xff\xfe\"\\\u2029\x7f", "\x00", "")
	f.Fuzz(func(t *testing.T, exec, event int64, step, url, cmd string) {
		n := Notification{ExecutionID: exec, EventID: event, CommandID: cmd, Step: step, ServerURL: url}
		got := n.Encode()
		if want := stdEncode(t, n); !bytes.Equal(got, want) {
			t.Fatalf("Encode = %s, encoding/json = %s", got, want)
		}
	})
}

func TestDecodeNotificationErrors(t *testing.T) {
	t.Parallel()
	valid := `"execution_id":1,"event_id":2,"command_id":"1:s:2","step":"s","server_url":"http://h"`
	cases := []struct {
		name, in, want string
	}{
		{"empty", ``, "want a JSON object, found end of input"},
		{"array", `[]`, "want a JSON object, found an array"},
		{"empty object", `{}`, "missing field(s) execution_id, event_id, command_id, step, server_url"},
		{"missing server_url", `{"execution_id":1,"event_id":2,"command_id":"1:s:2","step":"s"}`, "missing field(s) server_url"},
		{"unknown field", `{` + valid + `,"extra":1}`, `unknown field "extra"`},
		{"case mismatch", `{"Execution_ID":1}`, `unknown field "Execution_ID"`},
		{"duplicate", `{` + valid + `,"step":"s"}`, `duplicate field "step"`},
		{"string id", `{"execution_id":"1"}`, "execution_id must be a positive integer, found a string"},
		{"null id", `{"execution_id":null}`, "execution_id must be a positive integer, found null"},
		{"zero id", `{"execution_id":0}`, "execution_id must be a positive integer, got 0"},
		{"negative id", `{"event_id":-4}`, "event_id must be a positive integer, got -4"},
		{"float id", `{"event_id":1.5}`, "event_id must be a positive integer, got 1.5"},
		{"exponent id", `{"event_id":1e3}`, "event_id must be a positive integer, got 1e3"},
		{"overflow id", `{"event_id":9223372036854775808}`, "event_id must be a positive integer"},
		{"number step", `{"step":1}`, "step must be a string, found a number"},
		{"command id mismatch", `{"execution_id":1,"event_id":2,"command_id":"1:s:3","step":"s","server_url":"http://h"}`, `command_id "1:s:3" does not match execution_id:step:event_id "1:s:2"`},
		{"old two-part command id", `{"execution_id":1,"event_id":2,"command_id":"1:s","step":"s","server_url":"http://h"}`, "does not match"},
		{"empty step", `{"execution_id":1,"event_id":2,"command_id":"1::2","step":"","server_url":"http://h"}`, "step must not be empty"},
		{"relative url", `{"execution_id":1,"event_id":2,"command_id":"1:s:2","step":"s","server_url":"/api"}`, "absolute http(s) URL"},
		{"trailing data", `{` + valid + `} {}`, "unexpected data after the object"},
		{"trailing comma", `{` + valid + `,}`, "want a field name"},
		{"missing colon", `{"step" "s"}`, `want ':' after field "step"`},
		{"unterminated", `{"step":"s`, "unterminated string"},
		{"control char", "{\"step\":\"a\nb\"}", "unescaped control character"},
		{"bad escape", `{"step":"\x"}`, `invalid escape '\x'`},
		{"lone surrogate", `{"step":"\ud800"}`, "unpaired UTF-16 surrogate"},
		{"invalid utf8", "{\"step\":\"\xff\"}", "not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeNotification([]byte(tc.in))
			if err == nil {
				t.Fatalf("DecodeNotification(%s) succeeded", tc.in)
			}
			if !errors.Is(err, ErrInvalidNotification) {
				t.Errorf("error %v does not wrap ErrInvalidNotification", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestDecodeNotificationAcceptsValidJSONVariants(t *testing.T) {
	t.Parallel()
	in := " {\n\t\"server_url\" : \"http:\\/\\/h\" , \"step\":\"\\u0073\\ud83d\\ude80\",\"command_id\":\"1:s\U0001F680:2\"," +
		"\"execution\\u005fid\":1,\"event_id\":2}\r\n"
	n, err := DecodeNotification([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Notification{ExecutionID: 1, EventID: 2, CommandID: "1:s🚀:2", Step: "s🚀", ServerURL: "http://h"}
	if n != want {
		t.Fatalf("got %+v, want %+v", n, want)
	}
}

func FuzzDecodeNotification(f *testing.F) {
	f.Add(testNotification(123, 124, "step").Encode())
	f.Add(testNotification(1, 2, "a:b\"\\\u2028").Encode())
	f.Add([]byte(`{"execution_id":1,"event_id":2,"command_id":"1:s:2","step":"s","server_url":"http://h","x":1}`))
	f.Add([]byte(`{"execution_id":1.0,"event_id":2e0,"command_id":"1:s:2","step":"\ud83d\ude80","server_url":"http://h"}`))
	f.Add([]byte(`{"step":"\u00e9\ud800"}`))
	f.Add([]byte(` {"execution_id" : 1 } `))
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := DecodeNotification(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidNotification) {
				t.Fatalf("error %v does not wrap ErrInvalidNotification", err)
			}
			return
		}
		// Anything accepted is valid JSON that encoding/json reads the same way,
		if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		var std Notification
		if err := json.Unmarshal(in, &std); err != nil || std != n {
			t.Fatalf("encoding/json reads %q as %+v (%v), we read %+v", in, std, err, n)
		}
		// satisfies the contract,
		if err := n.Validate(); err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(n.Step) || !utf8.ValidString(n.CommandID) || !utf8.ValidString(n.ServerURL) {
			t.Fatalf("accepted invalid UTF-8: %+v", n)
		}
		// and survives a round trip.
		again, err := DecodeNotification(n.Encode())
		if err != nil || again != n {
			t.Fatalf("round trip of %+v: %+v, %v", n, again, err)
		}
	})
}

func BenchmarkNotificationEncode(b *testing.B) {
	n := testNotification(7341234567890123, 7341234567890124, "fetch_customers")
	n.ServerURL = "http://noetl.noetl.svc.cluster.local:8082"
	b.ReportAllocs()
	for b.Loop() {
		_ = n.Encode()
	}
}

func BenchmarkNotificationDecode(b *testing.B) {
	n := testNotification(7341234567890123, 7341234567890124, "fetch_customers")
	n.ServerURL = "http://noetl.noetl.svc.cluster.local:8082"
	data := n.Encode()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeNotification(data); err != nil {
			b.Fatal(err)
		}
	}
}
