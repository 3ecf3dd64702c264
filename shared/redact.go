package evalflow

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Redacted stands where a secret was.
const Redacted = "[redacted]"

// Redact returns text with every form of each secret (Redactor) replaced by Redacted.
// What comes back from an endpoint or an engine (an error body, model output, a log
// tail) may echo the run's key; it goes through a Redactor before it is cut, stored,
// logged or sent.
func Redact(text string, secrets ...string) string { return NewRedactor(secrets...).String(text) }

// A Redactor finds the secrets it was made with in any form an endpoint could give
// them back in: as they are, in any case, each character percent-encoded or
// JSON-escaped (\u00XX) or not, and in base64 (standard or URL-safe, at any offset
// in the encoded text). Its zero value, and one made with no secrets, redact nothing.
type Redactor struct {
	re *regexp.Regexp
	// literal are the secrets too long for a pattern (a kubeconfig): found as they
	// are only.
	literal []string
	// secrets are the secrets of re, in lower case (Clip drops a start of one).
	secrets []string
	// hints are what text must hold (ASCII case ignored) for re to find anything in
	// it: a quick look that spares most texts the pattern.
	hints [][]byte
}

// secretPatternMax is the longest secret matched in every form; longer ones are
// matched as they are.
const secretPatternMax = 512

// secretMin is the shortest secret redacted: shorter ones would redact ordinary text.
const secretMin = 4

// NewRedactor makes a Redactor of secrets ("" and very short ones are ignored).
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	var alts []string
	for _, s := range secrets {
		switch {
		case len(s) < secretMin:
			continue
		case len(s) > secretPatternMax:
			r.literal = append(r.literal, s)
			continue
		}
		alts = append(alts, charwise(s))
		r.secrets = append(r.secrets, strings.ToLower(s))
		r.hints = append(r.hints, bytes.ToLower([]byte(s[:secretMin])))
		for _, core := range base64Cores(s) {
			alts = append(alts, regexp.QuoteMeta(core))
			r.hints = append(r.hints, bytes.ToLower([]byte(core[:min(secretMin, len(core))])))
		}
	}
	if len(alts) > 0 {
		r.hints = append(r.hints, []byte("%"), []byte(`\u00`))
		r.re = regexp.MustCompile("(?i)" + strings.Join(alts, "|"))
	}
	return r
}

// charwise is a pattern for s with each byte as it is, %XX or \u00XX (the backslash
// doubled, as in JSON within JSON, or not).
func charwise(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, `(?:%s|%%%02x|\\+u00%02x)`, regexp.QuoteMeta(s[i:i+1]), s[i], s[i])
	}
	return b.String()
}

// base64Cores are the parts of s's base64 forms (standard and URL-safe) that s alone
// decides, at each of the three offsets it can start at in encoded text.
func base64Cores(s string) []string {
	var cores []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k := range 3 {
			e := enc.EncodeToString(append(make([]byte, k), s...))
			from, to := (8*k+5)/6, 8*(k+len(s))/6
			if to-from >= secretMin {
				cores = append(cores, e[from:to])
			}
		}
	}
	return cores
}

// String is text with each secret, in every form, replaced by Redacted.
func (r *Redactor) String(text string) string {
	if r == nil {
		return text
	}
	for _, s := range r.literal {
		text = strings.ReplaceAll(text, s, Redacted)
	}
	if r.re == nil || !r.mayHold([]byte(text)) {
		return text
	}
	return r.re.ReplaceAllLiteralString(text, Redacted)
}

// Bytes is b with each secret, in every form, replaced by Redacted (b itself when it
// holds none).
func (r *Redactor) Bytes(b []byte) []byte {
	if r == nil {
		return b
	}
	for _, s := range r.literal {
		b = bytes.ReplaceAll(b, []byte(s), []byte(Redacted))
	}
	if r.re == nil || !r.mayHold(b) {
		return b
	}
	return r.re.ReplaceAllLiteral(b, []byte(Redacted))
}

// Clip redacts text, then cuts it to at most n bytes (on a character boundary),
// dropping a start of a secret the cut may have left at its end.
func (r *Redactor) Clip(text string, n int) string {
	text = r.String(text)
	if len(text) <= n {
		return text
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return r.trimPartial(text[:cut]) + "…"
}

// trimPartial drops the end of text if it is the start of a secret (as it is, ASCII
// case ignored), secretMin bytes or more of it.
func (r *Redactor) trimPartial(text string) string {
	if r == nil || r.re == nil {
		return text
	}
	lower := strings.ToLower(text)
	for _, s := range r.secrets {
		for k := len(s) - 1; k >= secretMin; k-- {
			if strings.HasSuffix(lower, s[:k]) {
				return text[:len(text)-k]
			}
		}
	}
	return text
}

// mayHold reports whether b could hold a secret in some form: it holds one of the
// hints, ASCII case ignored.
func (r *Redactor) mayHold(b []byte) bool {
	for _, h := range r.hints {
		if indexFold(b, h) >= 0 {
			return true
		}
	}
	return false
}

// indexFold is the index of lower (lower-case ASCII) in b, ASCII case ignored; -1 if
// it is not there.
func indexFold(b, lower []byte) int {
	if len(lower) == 0 {
		return 0
	}
	first := lower[0]
	other := first // the first byte's other case, if it has one
	if 'a' <= first && first <= 'z' {
		other = first - 'a' + 'A'
	}
	next := func(c byte, from int) int { // the next c at or after from, or len(b)
		if j := bytes.IndexByte(b[from:], c); j >= 0 {
			return from + j
		}
		return len(b)
	}
	f, o := next(first, 0), next(other, 0)
	for {
		i := min(f, o)
		if i+len(lower) > len(b) {
			return -1
		}
		if bytes.EqualFold(b[i:i+len(lower)], lower) {
			return i
		}
		if f == i {
			f = next(first, i+1)
		}
		if o == i {
			o = next(other, i+1)
		}
	}
}
