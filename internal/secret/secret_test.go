package secret_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/secret"
)

type bundle struct {
	hexKey string
	box    *secret.Box
}

func setup(t *testing.T) *bundle {
	t.Helper()
	hexKey := randomHexKey(t)
	box, err := secret.New(hexKey)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{hexKey: hexKey, box: box}
}

func randomHexKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, secret.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	plain := []byte(`{"user":"app","password":"hunter2"}`)
	sealed, err := b.box.Seal(plain, []byte("pg_main"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("sealed value contains the plaintext")
	}
	if sealed[0] != secret.Version1 {
		t.Fatalf("version byte = %d, want %d", sealed[0], secret.Version1)
	}
	got, err := b.box.Open(sealed, []byte("pg_main"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, want %q", got, plain)
	}
	// The same key in base64 opens it too.
	raw, _ := hex.DecodeString(b.hexKey)
	other, err := secret.New(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := other.Open(sealed, []byte("pg_main")); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open with the base64 form of the key = %q, %v", got, err)
	}
	if other.KeyID() != b.box.KeyID() {
		t.Fatal("the same key gave two key ids")
	}
}

func TestFreshNoncePerSeal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	x, _ := b.box.Seal([]byte("same"), nil)
	y, _ := b.box.Seal([]byte("same"), nil)
	if bytes.Equal(x, y) {
		t.Fatal("two seals of the same plaintext are identical; the nonce is not fresh")
	}
}

func TestTamperDetection(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sealed, err := b.box.Seal([]byte(`{"token":"abc"}`), []byte("api"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range sealed {
		if i >= 1 && i < 9 {
			continue // key id bytes: covered by the wrong-key test
		}
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		if _, err := b.box.Open(bad, []byte("api")); !errors.Is(err, secret.ErrCorrupt) {
			t.Fatalf("flipping byte %d: err = %v, want ErrCorrupt", i, err)
		}
	}
	if _, err := b.box.Open(sealed, []byte("other_name")); !errors.Is(err, secret.ErrCorrupt) {
		t.Fatalf("open under another name: err = %v, want ErrCorrupt", err)
	}
	if _, err := b.box.Open(sealed[:20], []byte("api")); !errors.Is(err, secret.ErrCorrupt) {
		t.Fatalf("truncated: err = %v, want ErrCorrupt", err)
	}
}

func TestWrongKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sealed, _ := b.box.Seal([]byte("x"), nil)
	other, err := secret.New(randomHexKey(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Open(sealed, nil)
	if !errors.Is(err, secret.ErrWrongKey) || !strings.Contains(err.Error(), "sealed with another MILLRACE_SECRET_KEY") {
		t.Fatalf("err = %v, want ErrWrongKey naming MILLRACE_SECRET_KEY", err)
	}
}

func TestBadKeyFormats(t *testing.T) {
	t.Parallel()
	k32 := bytes.Repeat([]byte{7}, 32)
	for name, tc := range map[string]struct {
		key  string
		want string // substring of the error; "" = valid
	}{
		"hex":            {hex.EncodeToString(k32), ""},
		"hex upper":      {strings.ToUpper(hex.EncodeToString(k32)), ""},
		"base64":         {base64.StdEncoding.EncodeToString(k32), ""},
		"base64 raw url": {base64.RawURLEncoding.EncodeToString(k32), ""},
		"padded spaces":  {"  " + hex.EncodeToString(k32) + "\n", ""},
		"empty":          {"", "MILLRACE_SECRET_KEY is not set"},
		"short hex":      {hex.EncodeToString(k32[:16]), "malformed"},
		"bad hex":        {strings.Repeat("zz", 32), "malformed"},
		"base64 16":      {base64.StdEncoding.EncodeToString(k32[:16]), "malformed"},
		"passphrase":     {"correct horse battery staple", "malformed"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := secret.New(tc.key)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted a bad key")
			}
			msg := err.Error()
			for _, s := range []string{tc.want, "MILLRACE_SECRET_KEY", "openssl rand -hex 32"} {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
			if strings.TrimSpace(tc.key) != "" && strings.Contains(msg, strings.TrimSpace(tc.key)) {
				t.Errorf("error %q echoes the key", msg)
			}
		})
	}
	if _, err := secret.New(""); !errors.Is(err, secret.ErrMissing) {
		t.Fatalf("empty key: err = %v, want ErrMissing", err)
	}
}
