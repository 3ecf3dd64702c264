// Package auth knows evalflow's callers by their bearer tokens, read from a tokens
// file (EVALFLOW_TOKENS_FILE; a Secret's file in a cluster): one "TOKEN CALLER" a
// line, # for a comment. A token of caller Operator ("*") sees every run; any other
// caller sees its own. The file is read again when it changes (a Secret updated in
// place), so tokens are added and revoked without a restart.
package auth

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Operator is the caller of a token that sees and acts on every run.
const Operator = "*"

// MinTokenLength bounds a token from below: a short one could be guessed.
const MinTokenLength = 16

var callerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@:/-]{0,127}$`)

// ErrNoToken says a request carries no token, or one the tokens file does not hold.
var ErrNoToken = errors.New("auth: no valid bearer token")

// Parse reads a tokens file. A line it cannot take is an error naming the line (never
// showing its token).
func Parse(r io.Reader) (map[[32]byte]string, error) {
	tokens := map[[32]byte]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) != 2:
			return nil, fmt.Errorf("auth: line %d: want TOKEN CALLER, got %d fields", n, len(fields))
		case len(fields[0]) < MinTokenLength:
			return nil, fmt.Errorf("auth: line %d: a token needs at least %d characters", n, MinTokenLength)
		case fields[1] != Operator && !callerRE.MatchString(fields[1]):
			return nil, fmt.Errorf("auth: line %d: caller %q: letters, digits and ._@:/- (or * for an operator)", n, fields[1])
		}
		h := sha256.Sum256([]byte(fields[0]))
		if _, dup := tokens[h]; dup {
			return nil, fmt.Errorf("auth: line %d: a token listed twice", n)
		}
		tokens[h] = fields[1]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return tokens, nil
}

// OperatorToken is the first operator's token of a tokens file ("" for none).
func OperatorToken(file []byte) string {
	for _, line := range strings.Split(string(file), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == Operator && !strings.HasPrefix(f[0], "#") {
			return f[0]
		}
	}
	return ""
}

// NewFile is a tokens file holding one operator token, token.
func NewFile(token string) []byte {
	return []byte("# evalflow's callers: one TOKEN CALLER a line; caller * is an operator.\n" + token + " " + Operator + "\n")
}

// Tokens are the tokens of one file, read again when it changes.
type Tokens struct {
	path string
	// CheckEvery bounds how often the file is looked at for a change (default 1 s).
	CheckEvery time.Duration

	mu      sync.Mutex
	tokens  map[[32]byte]string
	stamp   string // the file's size and modification time when read
	checked time.Time
}

// Open reads the tokens file at path.
func Open(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Caller is the caller whose token token is, or ErrNoToken. A file changed into one
// that cannot be read keeps the tokens read before.
func (t *Tokens) Caller(token string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	every := t.CheckEvery
	if every <= 0 {
		every = time.Second
	}
	if time.Since(t.checked) >= every {
		_ = t.reloadLocked()
	}
	if token == "" {
		return "", ErrNoToken
	}
	caller, ok := t.tokens[sha256.Sum256([]byte(token))]
	if !ok {
		return "", ErrNoToken
	}
	return caller, nil
}

func (t *Tokens) reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reloadLocked()
}

func (t *Tokens) reloadLocked() error {
	t.checked = time.Now()
	fi, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("auth: tokens file: %w", err)
	}
	stamp := fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	if stamp == t.stamp && t.tokens != nil {
		return nil
	}
	f, err := os.Open(t.path)
	if err != nil {
		return fmt.Errorf("auth: tokens file: %w", err)
	}
	defer f.Close()
	tokens, err := Parse(f)
	if err != nil {
		return fmt.Errorf("auth: tokens file %s: %w", t.path, err)
	}
	t.tokens, t.stamp = tokens, stamp
	return nil
}

// NewToken returns a fresh random token.
func NewToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Bearer is the token of an Authorization header's Bearer credentials ("" for none).
func Bearer(header string) string {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
