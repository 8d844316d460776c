package secret_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/secret"
)

// TestRingRotation is a rotation as an operator does it: values sealed
// under the old key still open once it moves to MILLRACE_SECRET_KEYS, new
// seals use the new key, and Reseal moves old values onto it.
func TestRingRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := randomHexKey(t), randomHexKey(t)
	oldBox, err := secret.New(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	sealedOld, _ := oldBox.Seal([]byte("pw-old"), []byte("db"))

	ring, err := secret.NewRing(newKey, " "+oldKey+" ,")
	if err != nil {
		t.Fatal(err)
	}
	if ring.OlderKeys() != 1 || !strings.HasPrefix(ring.KeyIDs(), ring.KeyID()+",") {
		t.Fatalf("ring: %d older keys, ids %s", ring.OlderKeys(), ring.KeyIDs())
	}
	if got, err := ring.Open(sealedOld, []byte("db")); err != nil || string(got) != "pw-old" {
		t.Fatalf("open a value sealed under the older key: %q, %v", got, err)
	}
	if ring.Current(sealedOld) {
		t.Fatal("a value sealed under the older key reads as current")
	}
	sealedNew, _ := ring.Seal([]byte("pw-new"), []byte("db"))
	if !ring.Current(sealedNew) {
		t.Fatal("a new seal is not under the sealing key")
	}
	if _, err := oldBox.Open(sealedNew, []byte("db")); !errors.Is(err, secret.ErrWrongKey) {
		t.Fatalf("the old key opened a new seal: %v", err)
	}

	re, changed, err := ring.Reseal(sealedOld, []byte("db"))
	if err != nil || !changed || !ring.Current(re) {
		t.Fatalf("Reseal: changed=%v current=%v err=%v", changed, ring.Current(re), err)
	}
	// After the rotation the old key can go: the new key alone opens it.
	alone, _ := secret.New(newKey)
	if got, err := alone.Open(re, []byte("db")); err != nil || string(got) != "pw-old" {
		t.Fatalf("open the resealed value with the new key alone: %q, %v", got, err)
	}
	same, changed, err := ring.Reseal(re, []byte("db"))
	if err != nil || changed || !bytes.Equal(same, re) {
		t.Fatalf("Reseal of a current value: changed=%v err=%v", changed, err)
	}
	if _, _, err := ring.Reseal(re, []byte("other")); !errors.Is(err, secret.ErrCorrupt) {
		t.Fatalf("Reseal under another name: %v, want ErrCorrupt", err)
	}

	// A key in neither place is reported with every id the server has.
	stranger, _ := secret.New(randomHexKey(t))
	_, err = stranger.Open(sealedOld, []byte("db"))
	if !errors.Is(err, secret.ErrWrongKey) {
		t.Fatalf("err = %v", err)
	}
	_, err = secret.NewRing(randomHexKey(t), "")
	if err != nil {
		t.Fatalf("a ring without older keys: %v", err)
	}
}

func TestRingBadOlderKey(t *testing.T) {
	t.Parallel()
	bad := "correct horse battery staple"
	_, err := secret.NewRing(randomHexKey(t), randomHexKey(t)+","+bad)
	if err == nil {
		t.Fatal("a malformed older key was accepted")
	}
	msg := err.Error()
	if !strings.Contains(msg, "MILLRACE_SECRET_KEYS: key 2 of the list") || strings.Contains(msg, bad) {
		t.Fatalf("error %q: want it to name MILLRACE_SECRET_KEYS and the position, never the key", msg)
	}
	if _, err := secret.NewRing("", randomHexKey(t)); !errors.Is(err, secret.ErrMissing) {
		t.Fatalf("older keys without a sealing key: %v, want ErrMissing", err)
	}
}
