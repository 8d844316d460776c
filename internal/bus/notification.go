package bus

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrInvalidNotification wraps every DecodeNotification and
// Notification.Validate error. A worker should terminate (not redeliver) such
// a message: redelivery cannot make it valid.
var ErrInvalidNotification = errors.New("invalid notification")

// Notification is the message published for every command.issued event. It
// only references the event; workers fetch the command from the API at
// ServerURL.
type Notification struct {
	ExecutionID int64  `json:"execution_id"`
	EventID     int64  `json:"event_id"`
	CommandID   string `json:"command_id"`
	Step        string `json:"step"`
	ServerURL   string `json:"server_url"`
}

// CommandID formats the command id "<execution_id>:<step>:<event_id>".
func CommandID(executionID int64, step string, eventID int64) string {
	b := make([]byte, 0, 42+len(step))
	b = strconv.AppendInt(b, executionID, 10)
	b = append(b, ':')
	b = append(b, step...)
	b = append(b, ':')
	b = strconv.AppendInt(b, eventID, 10)
	return string(b)
}

// NotifyMsgID is the Nats-Msg-Id of a command's publishes-th notification:
// the command id for the first, "<command id>#<n>" after, so a
// re-notification is not swallowed by JetStream's duplicate window while
// copies of the same one (several relays, a publish retried after a crash)
// are.
func NotifyMsgID(commandID string, publishes int) string {
	if publishes <= 1 {
		return commandID
	}
	return commandID + "#" + strconv.Itoa(publishes)
}

// ParseCommandID splits a command id produced by CommandID. The step is
// everything between the first and the last ':' so step names may contain
// ':' themselves; ids must be canonical positive decimals.
func ParseCommandID(s string) (executionID int64, step string, eventID int64, err error) {
	first, last := strings.IndexByte(s, ':'), strings.LastIndexByte(s, ':')
	if first < 0 || first == last {
		return 0, "", 0, fmt.Errorf("command id %s: want <execution_id>:<step>:<event_id>", quoteTrunc(s))
	}
	if executionID, err = parseID(s[:first]); err != nil {
		return 0, "", 0, fmt.Errorf("command id %s: execution id: %w", quoteTrunc(s), err)
	}
	if step = s[first+1 : last]; step == "" {
		return 0, "", 0, fmt.Errorf("command id %s: step is empty", quoteTrunc(s))
	}
	if eventID, err = parseID(s[last+1:]); err != nil {
		return 0, "", 0, fmt.Errorf("command id %s: event id: %w", quoteTrunc(s), err)
	}
	return executionID, step, eventID, nil
}

// parseID accepts only the canonical decimal form of a positive int64 so that
// formatting the result reproduces the input exactly.
func parseID[T string | []byte](s T) (int64, error) {
	if len(s) == 0 {
		return 0, errors.New("empty")
	}
	if s[0] == '0' {
		return 0, fmt.Errorf("%s is not a positive integer (zero and leading zeros are not allowed)", quoteTrunc(string(s)))
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%s is not a positive integer", quoteTrunc(string(s)))
		}
		d := int64(c - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, fmt.Errorf("%s does not fit in int64", quoteTrunc(string(s)))
		}
		v = v*10 + d
	}
	return v, nil
}

// Validate checks the invariants DecodeNotification enforces, so publishers
// can check before publishing.
func (n Notification) Validate() error {
	var errs []string
	if n.ExecutionID <= 0 {
		errs = append(errs, fmt.Sprintf("execution_id must be > 0, got %d", n.ExecutionID))
	}
	if n.EventID <= 0 {
		errs = append(errs, fmt.Sprintf("event_id must be > 0, got %d", n.EventID))
	}
	if n.Step == "" {
		errs = append(errs, "step must not be empty")
	}
	// Parsing instead of formatting keeps the valid path allocation-free;
	// with positive ids and a non-empty step both checks are equivalent.
	if exec, step, event, err := ParseCommandID(n.CommandID); err != nil || exec != n.ExecutionID || step != n.Step || event != n.EventID {
		want := CommandID(n.ExecutionID, n.Step, n.EventID)
		errs = append(errs, fmt.Sprintf("command_id %s does not match execution_id:step:event_id %s", quoteTrunc(n.CommandID), quoteTrunc(want)))
	}
	if err := checkServerURL(n.ServerURL); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidNotification, strings.Join(errs, "; "))
	}
	return nil
}

// checkServerURL requires an absolute http(s) URL: workers call it back.
func checkServerURL(s string) error {
	if s == "" {
		return errors.New("server_url must not be empty")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("server_url %s must be an absolute http(s) URL", quoteTrunc(s))
	}
	return nil
}

// Encode returns the notification as a JSON object with exactly the five
// contract keys. It does not validate; use Validate for that.
func (n Notification) Encode() []byte {
	// 65 bytes of keys and punctuation, 6 quotes, two int64s of up to 20 digits.
	return n.AppendJSON(make([]byte, 0, 111+len(n.CommandID)+len(n.Step)+len(n.ServerURL)))
}

// AppendJSON appends the Encode form of n to b. Its output is byte-for-byte
// what encoding/json produces with HTML escaping disabled.
func (n Notification) AppendJSON(b []byte) []byte {
	b = append(b, `{"execution_id":`...)
	b = strconv.AppendInt(b, n.ExecutionID, 10)
	b = append(b, `,"event_id":`...)
	b = strconv.AppendInt(b, n.EventID, 10)
	b = append(b, `,"command_id":`...)
	b = appendJSONString(b, n.CommandID)
	b = append(b, `,"step":`...)
	b = appendJSONString(b, n.Step)
	b = append(b, `,"server_url":`...)
	b = appendJSONString(b, n.ServerURL)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString mirrors encoding/json's string encoder (without HTML
// escaping): invalid UTF-8 becomes U+FFFD, and U+2028/U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Field bits for DecodeNotification's presence and duplicate tracking.
const (
	fieldExecutionID = 1 << iota
	fieldEventID
	fieldCommandID
	fieldStep
	fieldServerURL
	fieldsAll = fieldExecutionID | fieldEventID | fieldCommandID | fieldStep | fieldServerURL
)

var fieldNames = [...]string{"execution_id", "event_id", "command_id", "step", "server_url"}

// DecodeNotification parses a notification strictly: one JSON object with
// exactly the five contract keys (case-sensitive, no duplicates, nothing
// else), ids as positive JSON integers, strings as valid UTF-8, and the
// invariants of Notification.Validate. Errors wrap ErrInvalidNotification.
//
// It is hand-written rather than encoding/json because encoding/json matches
// keys case-insensitively, lets duplicate keys overwrite each other and cannot
// tell a missing id from zero.
func DecodeNotification(b []byte) (Notification, error) {
	var n Notification
	d := jsonDecoder{b: b}
	seen, err := d.object(&n)
	if err != nil {
		return Notification{}, fmt.Errorf("%w: %v", ErrInvalidNotification, err)
	}
	if seen != fieldsAll {
		var missing []string
		for i, name := range fieldNames {
			if seen&(1<<i) == 0 {
				missing = append(missing, name)
			}
		}
		return Notification{}, fmt.Errorf("%w: missing field(s) %s", ErrInvalidNotification, strings.Join(missing, ", "))
	}
	if err := n.Validate(); err != nil {
		return Notification{}, err
	}
	return n, nil
}

type jsonDecoder struct {
	b []byte
	i int
}

func (d *jsonDecoder) object(n *Notification) (seen int, err error) {
	d.space()
	if !d.consume('{') {
		return 0, fmt.Errorf("want a JSON object, found %s", d.describe())
	}
	d.space()
	if d.consume('}') {
		return 0, d.end()
	}
	for {
		d.space()
		if d.peek() != '"' {
			return seen, fmt.Errorf("want a field name at offset %d, found %s", d.i, d.describe())
		}
		// The key stays a []byte: switch string(key) does not allocate.
		key, err := d.str()
		if err != nil {
			return seen, err
		}
		d.space()
		if !d.consume(':') {
			return seen, fmt.Errorf("want ':' after field %s at offset %d, found %s", quoteTrunc(string(key)), d.i, d.describe())
		}
		d.space()
		bit := 0
		switch string(key) {
		case "execution_id":
			bit = fieldExecutionID
			n.ExecutionID, err = d.id("execution_id")
		case "event_id":
			bit = fieldEventID
			n.EventID, err = d.id("event_id")
		case "command_id":
			bit = fieldCommandID
			n.CommandID, err = d.strValue("command_id")
		case "step":
			bit = fieldStep
			n.Step, err = d.strValue("step")
		case "server_url":
			bit = fieldServerURL
			n.ServerURL, err = d.strValue("server_url")
		default:
			return seen, fmt.Errorf("unknown field %s (allowed: %s)", quoteTrunc(string(key)), strings.Join(fieldNames[:], ", "))
		}
		if err != nil {
			return seen, err
		}
		if seen&bit != 0 {
			return seen, fmt.Errorf("duplicate field %q", string(key))
		}
		seen |= bit
		d.space()
		if d.consume(',') {
			continue
		}
		if d.consume('}') {
			return seen, d.end()
		}
		return seen, fmt.Errorf("want ',' or '}' at offset %d, found %s", d.i, d.describe())
	}
}

func (d *jsonDecoder) end() error {
	d.space()
	if d.i != len(d.b) {
		return fmt.Errorf("unexpected data after the object at offset %d", d.i)
	}
	return nil
}

func (d *jsonDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *jsonDecoder) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *jsonDecoder) consume(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// describe names the JSON value starting at the cursor, for error messages.
func (d *jsonDecoder) describe() string {
	if d.i >= len(d.b) {
		return "end of input"
	}
	switch c := d.b[d.i]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	default:
		return fmt.Sprintf("%q", c)
	}
}

// id reads a JSON number and requires it to be a positive integer.
func (d *jsonDecoder) id(key string) (int64, error) {
	start := d.i
	if !d.number() {
		d.i = start
		return 0, fmt.Errorf("%s must be a positive integer, found %s", key, d.describe())
	}
	tok := d.b[start:d.i]
	v, err := parseID(tok)
	if err != nil {
		return 0, fmt.Errorf("%s must be a positive integer, got %s", key, truncate(string(tok)))
	}
	return v, nil
}

// number advances over one token of the JSON number grammar.
func (d *jsonDecoder) number() bool {
	digits := func() int {
		s := d.i
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
		return d.i - s
	}
	d.consume('-')
	if d.consume('0') {
		// JSON forbids leading zeros: "01" is not a number.
	} else if digits() == 0 {
		return false
	}
	if d.consume('.') && digits() == 0 {
		return false
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.i++
		if !d.consume('+') {
			d.consume('-')
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

func (d *jsonDecoder) strValue(key string) (string, error) {
	if d.peek() != '"' {
		return "", fmt.Errorf("%s must be a string, found %s", key, d.describe())
	}
	s, err := d.str()
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	return string(s), nil
}

// str reads a JSON string at the cursor (which is on the opening quote). The
// result aliases the input unless the string has escapes.
func (d *jsonDecoder) str() ([]byte, error) {
	start := d.i + 1
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			raw := d.b[start:j]
			if !utf8.Valid(raw) {
				return nil, fmt.Errorf("string at offset %d is not valid UTF-8", start-1)
			}
			d.i = j + 1
			return raw, nil
		case c == '\\':
			return d.strEscaped(start, j)
		case c < 0x20:
			return nil, fmt.Errorf("unescaped control character in string at offset %d", j)
		}
	}
	return nil, fmt.Errorf("unterminated string at offset %d", start-1)
}

// strEscaped finishes a string whose first escape is at j.
func (d *jsonDecoder) strEscaped(start, j int) ([]byte, error) {
	out := make([]byte, 0, len(d.b)-start)
	out = append(out, d.b[start:j]...)
	for j < len(d.b) {
		c := d.b[j]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return nil, fmt.Errorf("string at offset %d is not valid UTF-8", start-1)
			}
			d.i = j + 1
			return out, nil
		case c < 0x20:
			return nil, fmt.Errorf("unescaped control character in string at offset %d", j)
		case c != '\\':
			out = append(out, c)
			j++
			continue
		}
		if j+1 >= len(d.b) {
			break
		}
		esc := d.b[j+1]
		j += 2
		switch esc {
		case '"', '\\', '/':
			out = append(out, esc)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(d.b[j:])
			if !ok {
				return nil, fmt.Errorf("invalid \\u escape at offset %d", j-2)
			}
			j += 4
			if utf16.IsSurrogate(r) {
				// A high surrogate must be followed by an escaped low one.
				var r2 rune = -1
				if j+6 <= len(d.b) && d.b[j] == '\\' && d.b[j+1] == 'u' {
					r2, _ = hex4(d.b[j+2:])
				}
				dec := utf16.DecodeRune(r, r2)
				if dec == utf8.RuneError {
					return nil, fmt.Errorf("unpaired UTF-16 surrogate in \\u escape at offset %d", j-6)
				}
				r = dec
				j += 6
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, fmt.Errorf("invalid escape '\\%c' in string at offset %d", esc, j-2)
		}
	}
	return nil, fmt.Errorf("unterminated string at offset %d", start-1)
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// maxQuoted bounds values echoed in error messages.
const maxQuoted = 64

func truncate(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted] + "..."
	}
	return s
}

func quoteTrunc(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}
