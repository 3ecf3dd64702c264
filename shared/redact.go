package evalflow

import "strings"

// Redacted stands where a secret was.
const Redacted = "[redacted]"

// Redact returns text with every occurrence of each secret replaced by Redacted. What
// comes back from an endpoint or an engine (an error body, model output, a log tail)
// may echo the run's key; it goes through Redact before it is stored, logged or sent.
func Redact(text string, secrets ...string) string {
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			text = strings.ReplaceAll(text, s, Redacted)
		}
	}
	return text
}
