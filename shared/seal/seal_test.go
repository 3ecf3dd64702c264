package seal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestSealOpensOnlyForItsRun(t *testing.T) {
	key, err := ParseKey(NewKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("sk-live-0123456789")

	sealed := s.Seal("run-a", secret)

	if strings.Contains(sealed, "sk-live") {
		t.Fatalf("sealed value carries the secret in clear: %s", sealed)
	}
	got, err := s.Open("run-a", sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v; want the secret", got, err)
	}
	if _, err := s.Open("run-b", sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("opening for another run: err = %v, want ErrOpen", err)
	}
	other, _ := New(bytes.Repeat([]byte{7}, KeySize))
	if _, err := other.Open("run-a", sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("opening with another key: err = %v, want ErrOpen", err)
	}
	if s.Seal("run-a", secret) == sealed {
		t.Fatal("two seals of the same value are equal: the nonce is not fresh")
	}
}

func TestParseKeyRejectsWrongSizes(t *testing.T) {
	for _, k := range []string{"", "not base64!!", "c2hvcnQ="} {
		if _, err := ParseKey(k); err == nil {
			t.Errorf("ParseKey(%q) accepted a bad key", k)
		}
	}
}

func TestDeriveIsPerRunAndPurpose(t *testing.T) {
	key, _ := ParseKey(NewKey())
	s, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ParseKey(NewKey())
	s2, _ := New(other)
	a := s.Derive("job report", "run-a")
	if len(a) != KeySize {
		t.Fatalf("derived key of %d bytes", len(a))
	}
	again, _ := New(key)
	if !bytes.Equal(a, again.Derive("job report", "run-a")) {
		t.Error("the same run, purpose and sealing key derived a different key")
	}
	for name, k := range map[string][]byte{
		"another run":         s.Derive("job report", "run-b"),
		"another purpose":     s.Derive("token", "run-a"),
		"another sealing key": s2.Derive("job report", "run-a"),
		"the sealing key":     key,
	} {
		if bytes.Equal(a, k) {
			t.Errorf("%s: the same key", name)
		}
	}
}
