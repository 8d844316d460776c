package secret

import (
	"bytes"
	"fmt"
	"strings"
)

// EnvOlderKeys holds the older keys of the ring: they open, never seal.
const EnvOlderKeys = "MILLRACE_SECRET_KEYS"

// NewRing builds a Box that seals under key and also opens values sealed
// under any of older (comma-separated, each in key's format). That is key
// rotation: the old key moves to MILLRACE_SECRET_KEYS, a new one becomes
// MILLRACE_SECRET_KEY, and values are sealed again under it when written
// (or all at once by `millrace credential reseal`). Errors never echo a key.
func NewRing(key, older string) (*Box, error) {
	b, err := New(key)
	if err != nil {
		return nil, err
	}
	for i, s := range strings.Split(older, ",") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		k, err := New(s)
		if err != nil {
			return nil, fmt.Errorf("%s: key %d of the list: %s", EnvOlderKeys, i+1, strings.Replace(err.Error(), EnvKey+" is malformed", "malformed", 1))
		}
		if b.keyFor(k.keyID[:]) != nil {
			continue // the current key repeated, or a duplicate: harmless
		}
		b.older = append(b.older, k)
	}
	return b, nil
}

// keyFor is the ring's key with this id, or nil.
func (b *Box) keyFor(id []byte) *Box {
	if bytes.Equal(id, b.keyID[:]) {
		return b
	}
	for _, k := range b.older {
		if bytes.Equal(id, k.keyID[:]) {
			return k
		}
	}
	return nil
}

// KeyIDs lists the ring's key ids, the sealing key first, for logs and
// error messages (ids are fingerprints, not secrets).
func (b *Box) KeyIDs() string {
	ids := []string{b.KeyID()}
	for _, k := range b.older {
		ids = append(ids, k.KeyID())
	}
	return strings.Join(ids, ",")
}

// OlderKeys is how many keys open but do not seal.
func (b *Box) OlderKeys() int { return len(b.older) }

// Current reports whether sealed was sealed under the sealing key, so a
// value written before a rotation can be told apart and sealed again.
func (b *Box) Current(sealed []byte) bool {
	return len(sealed) > keyIDSize && sealed[0] == Version1 && bytes.Equal(sealed[1:1+keyIDSize], b.keyID[:])
}

// Reseal opens a value under any key of the ring and seals it again under
// the sealing key; changed is false (and out is sealed) when it already was.
func (b *Box) Reseal(sealed, ad []byte) (out []byte, changed bool, err error) {
	if b.Current(sealed) {
		if _, err := b.Open(sealed, ad); err != nil {
			return nil, false, err
		}
		return sealed, false, nil
	}
	plain, err := b.Open(sealed, ad)
	if err != nil {
		return nil, false, err
	}
	out, err = b.Seal(plain, ad)
	clear(plain)
	return out, err == nil, err
}
