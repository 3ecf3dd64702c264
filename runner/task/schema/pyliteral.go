package schema

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// pyStrings reads a Python list of string literals, as a template like
// "{{mc1_targets.choices}}" renders one (lm-eval reads it with ast.literal_eval):
// ['a', "b's"], with Python's escapes.
func pyStrings(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return nil, fmt.Errorf("%q is not a Python list", clip(s))
	}
	rest := strings.TrimSpace(s[1 : len(s)-1])
	var out []string
	for rest != "" {
		if rest[0] != '\'' && rest[0] != '"' {
			return nil, fmt.Errorf("%q: an element is not a string", clip(s))
		}
		str, n, err := pyString(rest)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", clip(s), err)
		}
		out = append(out, str)
		rest = strings.TrimSpace(rest[n:])
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return nil, fmt.Errorf("%q: elements not separated by commas", clip(s))
		}
		rest = strings.TrimSpace(rest[1:])
	}
	return out, nil
}

// pyString reads one quoted Python string literal at the start of s: its value and
// the bytes it took.
func pyString(s string) (string, int, error) {
	quote := s[0]
	var b strings.Builder
	for i := 1; i < len(s); {
		c := s[i]
		switch {
		case c == quote:
			return b.String(), i + 1, nil
		case c != '\\':
			r, size := utf8.DecodeRuneInString(s[i:])
			b.WriteRune(r)
			i += size
			continue
		case i+1 >= len(s):
			return "", 0, fmt.Errorf("a string ends in a backslash")
		}
		esc := s[i+1]
		i += 2
		switch esc {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '\\', '\'', '"':
			b.WriteByte(esc)
		case 'x', 'u', 'U':
			width := map[byte]int{'x': 2, 'u': 4, 'U': 8}[esc]
			if i+width > len(s) {
				return "", 0, fmt.Errorf("a short \\%c escape", esc)
			}
			v, err := strconv.ParseUint(s[i:i+width], 16, 32)
			if err != nil {
				return "", 0, fmt.Errorf("a bad \\%c escape", esc)
			}
			b.WriteRune(rune(v))
			i += width
		default:
			b.WriteByte('\\')
			b.WriteByte(esc)
		}
	}
	return "", 0, fmt.Errorf("a string is not closed")
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
