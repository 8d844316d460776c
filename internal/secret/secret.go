// Package secret seals small secrets (credential data) for storage at rest
// with AES-256-GCM under the key in MILLRACE_SECRET_KEY.
//
// A sealed value is
//
//	version (1 byte) | key id (8 bytes) | nonce (12 bytes) | ciphertext+tag
//
// The version byte lets a later format coexist with this one. The key id
// is derived from the key, so a key ring (ring.go: MILLRACE_SECRET_KEYS)
// picks the key that opens a value, and a key the server lacks is reported
// as such instead of as corruption. The header and the caller's
// associated data (the credential name) are authenticated, so a sealed
// value cannot be altered or moved to another name unnoticed.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// EnvKey is the environment variable that holds the key.
const EnvKey = "MILLRACE_SECRET_KEY"

// Format constants.
const (
	// KeySize is the AES-256 key length in bytes.
	KeySize = 32
	// Version1 marks AES-256-GCM with a random 96-bit nonce.
	Version1   byte = 1
	keyIDSize       = 8
	nonceSize       = 12
	headerSize      = 1 + keyIDSize + nonceSize
)

// generateHint tells an operator how to make a key.
const generateHint = "generate one with `openssl rand -hex 32` and set " + EnvKey + " (or --secret-key) on the server"

// Errors Open returns (wrapped with detail).
var (
	// ErrMissing: no key was configured.
	ErrMissing = errors.New(EnvKey + " is not set")
	// ErrWrongKey: the value was sealed under a different key.
	ErrWrongKey = errors.New("sealed with another " + EnvKey)
	// ErrCorrupt: the value is truncated, has an unknown version, or fails
	// authentication (it was altered, or belongs to another name).
	ErrCorrupt = errors.New("sealed data is corrupt or was altered")
)

// Box seals values under one key and opens values sealed under it or any
// older key of its ring (see NewRing). It is safe for concurrent use.
type Box struct {
	aead  cipher.AEAD
	keyID [keyIDSize]byte
	older []*Box // MILLRACE_SECRET_KEYS: open only
}

// ParseKey decodes a key given as 64 hex characters or as standard or URL
// base64 of 32 bytes. Errors never echo the value.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: credentials are encrypted at rest under it; %s", ErrMissing, generateHint)
	}
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == KeySize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s is malformed (%d characters): want 64 hex characters or base64 of 32 bytes; %s",
		EnvKey, len(s), generateHint)
}

// New builds a Box from the textual key (the value of MILLRACE_SECRET_KEY).
func New(key string) (*Box, error) {
	k, err := ParseKey(key)
	if err != nil {
		return nil, err
	}
	return NewFromBytes(k)
}

// NewFromBytes builds a Box from a raw 32-byte key.
func NewFromBytes(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	b := &Box{aead: aead}
	// An HMAC of a fixed label identifies the key without revealing it.
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("millrace secret key id v1"))
	copy(b.keyID[:], mac.Sum(nil))
	return b, nil
}

// KeyID is a short, non-secret fingerprint of the key (hex), for logs and
// for telling keys apart during rotation.
func (b *Box) KeyID() string { return hex.EncodeToString(b.keyID[:]) }

// Seal encrypts plaintext, binding it to ad (associated data, e.g. the
// credential name), which Open must be given again. Every call uses a
// fresh random nonce.
func (b *Box) Seal(plaintext, ad []byte) ([]byte, error) {
	out := make([]byte, headerSize, headerSize+len(plaintext)+b.aead.Overhead())
	out[0] = Version1
	copy(out[1:], b.keyID[:])
	if _, err := rand.Read(out[1+keyIDSize : headerSize]); err != nil {
		return nil, fmt.Errorf("read random nonce: %w", err)
	}
	return b.aead.Seal(out, out[1+keyIDSize:headerSize], plaintext, additional(out[:headerSize], ad)), nil
}

// Open decrypts a value sealed by Seal with the same ad. It returns an
// error wrapping ErrWrongKey or ErrCorrupt when it cannot.
func (b *Box) Open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < headerSize+b.aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(sealed))
	}
	if sealed[0] != Version1 {
		return nil, fmt.Errorf("%w: unknown format version %d (written by a newer Millrace?)", ErrCorrupt, sealed[0])
	}
	k := b.keyFor(sealed[1 : 1+keyIDSize])
	if k == nil {
		return nil, fmt.Errorf("%w (key id %x, this server has %s)", ErrWrongKey, sealed[1:1+keyIDSize], b.KeyIDs())
	}
	pt, err := k.aead.Open(nil, sealed[1+keyIDSize:headerSize], sealed[headerSize:], additional(sealed[:headerSize], ad))
	if err != nil {
		return nil, ErrCorrupt
	}
	return pt, nil
}

// additional authenticates the header along with the caller's data.
func additional(header, ad []byte) []byte {
	out := make([]byte, 0, len(header)+len(ad))
	return append(append(out, header...), ad...)
}
