package evalflow_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	evalflow "github.com/evalflow/evalflow/shared"
)

const canary = "sk-CANARY-0123456789abcdef0123456789abcd"

// leaks reports whether text still holds the key, or 8 or more of its characters in
// a row (as they are, ASCII case ignored).
func leaks(text string) bool {
	lower := strings.ToLower(text)
	key := strings.ToLower(canary)
	for i := 0; i+8 <= len(key); i++ {
		if strings.Contains(lower, key[i:i+8]) {
			return true
		}
	}
	return false
}

// Every form an endpoint could give the key back in is redacted.
func TestNoFormOfTheKeyGetsPast(t *testing.T) {
	jsonEscaped := func(s string) string {
		var b strings.Builder
		for _, c := range s {
			fmt.Fprintf(&b, `\u%04x`, c)
		}
		return b.String()
	}
	percent := func(s, format string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&b, format, s[i])
		}
		return b.String()
	}
	quoted, _ := json.Marshal("the key: " + canary)
	forms := map[string]string{
		"as it is":          canary,
		"upper case":        strings.ToUpper(canary),
		"lower case":        strings.ToLower(canary),
		"one char escaped":  strings.Replace(canary, "-", `\u002d`, -1),
		"all JSON-escaped":  jsonEscaped(canary),
		"JSON in JSON":      strings.Replace(string(quoted), "-", `\\u002d`, 1),
		"percent, lower":    percent(canary, "%%%02x"),
		"percent, upper":    percent(canary, "%%%02X"),
		"query-escaped":     url.QueryEscape("k=" + canary),
		"one char percent":  strings.Replace(canary, "-", "%2D", 1),
		"base64 at 0":       base64.StdEncoding.EncodeToString([]byte(canary)),
		"base64 at 1":       base64.StdEncoding.EncodeToString([]byte("a" + canary)),
		"base64 at 2":       base64.StdEncoding.EncodeToString([]byte("ab" + canary + "zz")),
		"base64url at 1":    base64.URLEncoding.EncodeToString([]byte("x" + canary)),
		"base64, no pad":    base64.RawStdEncoding.EncodeToString([]byte("Bearer " + canary)),
		"basic auth header": "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+canary)),
	}
	r := evalflow.NewRedactor(canary)
	for name, form := range forms {
		for _, text := range []string{form, "before " + form + " after", `{"content":"` + form + `"}`} {
			got := r.String(text)
			if strings.Contains(got, form) || !strings.Contains(got, evalflow.Redacted) {
				t.Errorf("%s: %q redacted to %q", name, text, got)
			}
			if name != "base64 at 0" && strings.HasPrefix(name, "base64") {
				continue // the key's bytes are not in the text as such
			}
			if b := r.Bytes([]byte(text)); leaks(decodeAll(string(b))) {
				t.Errorf("%s: %q redacted to %q, which decodes to the key", name, text, b)
			}
		}
	}
}

// decodeAll undoes JSON escapes and percent-encoding, as a reader of the text would.
func decodeAll(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		s = u
	}
	var v string
	if err := json.Unmarshal([]byte(`"`+strings.ReplaceAll(s, `"`, `\"`)+`"`), &v); err == nil {
		s = v
	}
	return s
}

// Text without the key is left as it is, the zero Redactor redacts nothing, and a
// secret too short to tell from text is ignored.
func TestTextWithoutTheKeyIsUntouched(t *testing.T) {
	r := evalflow.NewRedactor(canary, "", "ab")
	for _, text := range []string{"", "The answer is 42.", `{"choices":[{"text":"\u00e9t\u00e9 100% sk-other"}]}`, "c2stQ0FOQVJZ"} {
		if got := r.String(text); got != text {
			t.Errorf("%q redacted to %q", text, got)
		}
	}
	var zero *evalflow.Redactor
	if got := zero.String(canary); got != canary {
		t.Errorf("a nil Redactor changed the text: %q", got)
	}
}

// Redaction comes before the cut: wherever the key stands around it, nothing of it
// (8 characters or more) is left.
func TestAClipNeverLeavesPartOfTheKey(t *testing.T) {
	r := evalflow.NewRedactor(canary)
	const n = 512
	for pos := n - len(canary) - 2; pos <= n+2; pos++ {
		text := strings.Repeat("x", pos) + canary + strings.Repeat("y", 100)
		got := r.Clip(text, n)
		if leaks(got) || len(got) > n+len("…") {
			t.Fatalf("key at %d: clipped to %d bytes ending %q", pos, len(got), got[max(0, len(got)-60):])
		}
	}
	if got := r.Clip("short", n); got != "short" {
		t.Errorf("Clip of a short text = %q", got)
	}
}

// A long secret (a kubeconfig) is redacted as it is.
func TestALongSecretIsRedactedAsItIs(t *testing.T) {
	kubeconfig := "apiVersion: v1\n" + strings.Repeat("token: abc\n", 100)
	if got := evalflow.Redact("echo: "+kubeconfig, kubeconfig); got != "echo: "+evalflow.Redacted {
		t.Errorf("got %q", got)
	}
}

func BenchmarkRedactAnAnswer(b *testing.B) {
	r := evalflow.NewRedactor(canary)
	answer := []byte(`{"id":"cmpl-1","choices":[{"index":0,"text":"` + strings.Repeat("Once upon a time there was a little girl. ", 40) + `","finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":400}}`)
	b.SetBytes(int64(len(answer)))
	for b.Loop() {
		r.Bytes(answer)
	}
}
