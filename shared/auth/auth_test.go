package auth_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/shared/auth"
)

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTokensNameTheirCallerAndFollowTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	alice, ops := auth.NewToken(), auth.NewToken()
	write(t, path, "# callers\n"+alice+" alice\n\n"+ops+" *\n")
	tokens, err := auth.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tokens.CheckEvery = time.Nanosecond
	for token, want := range map[string]string{alice: "alice", ops: auth.Operator} {
		if got, err := tokens.Caller(token); err != nil || got != want {
			t.Errorf("caller of a token: %q, %v; want %q", got, err, want)
		}
	}
	for _, bad := range []string{"", "x", alice + "x", strings.ToUpper(alice)} {
		if _, err := tokens.Caller(bad); !errors.Is(err, auth.ErrNoToken) {
			t.Errorf("token %q: %v; want ErrNoToken", bad, err)
		}
	}

	// alice's token revoked, bob's added: no restart.
	bob := auth.NewToken()
	write(t, path, bob+" bob\n"+ops+" *\n# a longer file than before\n")
	if _, err := tokens.Caller(alice); !errors.Is(err, auth.ErrNoToken) {
		t.Errorf("a revoked token still answers: %v", err)
	}
	if got, err := tokens.Caller(bob); err != nil || got != "bob" {
		t.Errorf("an added token: %q, %v", got, err)
	}

	// A file broken while serving keeps what was read before.
	write(t, path, "not a tokens file at all, no\n")
	if got, err := tokens.Caller(bob); err != nil || got != "bob" {
		t.Errorf("after a broken edit: %q, %v; want the tokens read before", got, err)
	}
}

func TestABadTokensFileNamesTheLineNotTheToken(t *testing.T) {
	secret := auth.NewToken()
	for name, body := range map[string]string{
		"one field":        secret + "\n",
		"short token":      "abc alice\n",
		"bad caller":       secret + " al ice!\n",
		"a token twice":    secret + " a\n" + secret + " b\n",
		"three fields":     secret + " alice extra\n",
		"a caller of tabs": secret + " \talice\t\n" + secret + "x bad$\n",
	} {
		path := filepath.Join(t.TempDir(), "tokens")
		write(t, path, body)
		_, err := auth.Open(path)
		if err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: %v; want an error naming the line", name, err)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the token: %v", name, err)
		}
	}
}

func TestBearerReadsTheAuthorizationHeader(t *testing.T) {
	for header, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "": "", "Bearer": ""} {
		if got := auth.Bearer(header); got != want {
			t.Errorf("Bearer(%q) = %q; want %q", header, got, want)
		}
	}
}
