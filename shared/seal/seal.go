// Package seal encrypts secrets (API keys, kubeconfigs) with AES-256-GCM before they
// are stored. A sealed value is bound to its run: it opens only with the same run id.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// KeySize is the size of a sealing key: AES-256.
const KeySize = 32

// ErrOpen says a sealed value could not be opened: wrong key, wrong run, or tampered.
var ErrOpen = errors.New("seal: cannot open sealed value")

// Sealer seals and opens values with one key.
type Sealer struct {
	aead cipher.AEAD
	key  []byte // the master key Derive derives from
}

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Sealer{aead: aead, key: append([]byte(nil), key...)}, nil
}

// ParseKey decodes a base64 key (standard or URL alphabet) as found in the environment.
func ParseKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("seal: key must decode to %d bytes, got %d", KeySize, len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("seal: key is not base64")
}

// NewKey returns a fresh random key, base64-encoded.
func NewKey() string {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.StdEncoding.EncodeToString(b)
}

// Seal encrypts plaintext for the run named by runID.
func (s *Sealer) Seal(runID string, plaintext []byte) string {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plaintext, []byte(runID)))
}

// Open decrypts a value sealed for runID.
func (s *Sealer) Open(runID, sealed string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < s.aead.NonceSize() {
		return nil, ErrOpen
	}
	n := s.aead.NonceSize()
	out, err := s.aead.Open(nil, b[:n], b[n:], []byte(runID))
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

// Derive returns the key of purpose for the run named by runID (HKDF-SHA256 of the
// sealing key): the same run and purpose always give the same key, and one run's key
// tells nothing of another's or of the sealing key. A Job gets its run's key, never
// the sealing key.
func (s *Sealer) Derive(purpose, runID string) []byte {
	k, err := hkdf.Key(sha256.New, s.key, nil, "evalflow "+purpose+"\x00"+runID, KeySize)
	if err != nil {
		panic(err) // only for a length HKDF cannot give; KeySize it always can
	}
	return k
}
