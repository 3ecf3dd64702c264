// Package pyre is Python's re where lm-evaluation-harness's filters lean on it: a
// pattern with look-behind or look-ahead (BBH's "(?<=the answer is )(.*)(?=.)"),
// lazy quantifiers, backreferences, named groups; findall's results (the whole match
// without groups, the group's text with one, every group's with more); and lm-eval's
// regex filter over them. RE2 (Go's regexp) has no look-around; this is regexp2, a
// backtracking engine with Perl and .NET syntax, Python's named-group spellings
// translated.
package pyre

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/dlclark/regexp2/v2"
)

// Regex is a compiled pattern.
type Regex struct {
	src string
	re  *regexp2.Regexp
}

// pythonNames are Python's spellings of named groups and their backreferences.
var pythonNames = regexp.MustCompile(`\(\?P<([A-Za-z_][A-Za-z0-9_]*)>|\(\?P=([A-Za-z_][A-Za-z0-9_]*)\)`)

// MatchTimeout bounds one search: a pattern that backtracks without end on a model's
// answer fails that answer, not the run's time.
const MatchTimeout = time.Second

// Compile parses a Python regular expression.
func Compile(pattern string) (*Regex, error) {
	translated := pythonNames.ReplaceAllStringFunc(pattern, func(m string) string {
		sub := pythonNames.FindStringSubmatch(m)
		if sub[1] != "" {
			return "(?<" + sub[1] + ">"
		}
		return `\k<` + sub[2] + ">"
	})
	re, err := regexp2.Compile(pythonWords(translated), regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	re.MatchTimeout = MatchTimeout
	return &Regex{src: pattern, re: re}, nil
}

// pythonWords spells Python's \w and \W in regexp2's syntax: a letter, a number
// (str.isalnum) or "_" — not .NET's, which takes combining marks and connector
// punctuation and leaves out numbers that are not digits.
func pythonWords(p string) string {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p):
			next := p[i+1]
			switch {
			case next == 'w' && inClass:
				b.WriteString(`\p{L}\p{N}_`)
			case next == 'w':
				b.WriteString(`[\p{L}\p{N}_]`)
			case next == 'W' && !inClass:
				b.WriteString(`[^\p{L}\p{N}_]`)
			default: // \W in a class stays .NET's
				b.WriteByte(c)
				b.WriteByte(next)
			}
			i++
			continue
		case c == '[' && !inClass:
			inClass = true
			b.WriteByte(c)
			if i+1 < len(p) && p[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(p) && p[i+1] == ']' { // a ] first is a member
				b.WriteByte(']')
				i++
			}
			continue
		case c == ']' && inClass:
			inClass = false
		}
		b.WriteByte(c)
	}
	return b.String()
}

// String is the pattern as written.
func (r *Regex) String() string { return r.src }

// FindAll is Python's findall: for each match, left to right, its groups' texts (a
// group that did not take part is ""), or the whole match's where the pattern has no
// groups.
func (r *Regex) FindAll(s string) ([][]string, error) {
	var out [][]string
	m, err := r.re.FindStringMatch(s)
	for ; m != nil && err == nil; m, err = r.re.FindNextMatch(m) {
		groups := m.Groups()
		if len(groups) == 1 {
			out = append(out, []string{m.String()})
			continue
		}
		texts := make([]string, len(groups)-1)
		for i, g := range groups[1:] {
			if len(g.Captures) > 0 {
				texts[i] = g.String()
			}
		}
		out = append(out, texts)
	}
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", r.src, err)
	}
	return out, nil
}

// Extract is lm-eval's regex filter on one response: the match at groupSelect (Python
// indexing: -1 is the last), of it the first group that matched something (or the
// whole match), stripped; fallback when nothing matches or groupSelect is past the
// matches.
func (r *Regex) Extract(resp string, groupSelect int, fallback string) string {
	all, err := r.FindAll(resp)
	if err != nil || len(all) == 0 {
		return fallback
	}
	if groupSelect < 0 {
		groupSelect += len(all)
	}
	if groupSelect < 0 || groupSelect >= len(all) {
		return fallback
	}
	m := all[groupSelect]
	if len(r.re.GetGroupNumbers()) <= 2 { // one group, or none (group 0 is the match): Python gives a string
		return Strip(m[0])
	}
	for _, g := range m {
		if g != "" {
			return Strip(g)
		}
	}
	return fallback // a tuple of empty groups
}

// Search is bool(re.search(pattern, s)) (false when the search gives up).
func (r *Regex) Search(s string) bool {
	ok, err := r.re.MatchString(s)
	return ok && err == nil
}

// Split is re.split(pattern, s): the text between matches, each match's groups' texts
// between them (a group that did not take part is "").
func (r *Regex) Split(s string) []string {
	var out []string
	runes := []rune(s) // regexp2 indexes runes
	at := 0
	m, err := r.re.FindStringMatch(s)
	for ; m != nil && err == nil; m, err = r.re.FindNextMatch(m) {
		out = append(out, string(runes[at:m.RuneIndex]))
		for _, g := range m.Groups()[1:] {
			out = append(out, g.String())
		}
		at = m.RuneIndex + m.RuneLength
	}
	if err != nil {
		return []string{s}
	}
	return append(out, string(runes[at:]))
}

// Replace is re.sub(pattern, repl, s) with repl in regexp2's syntax ($1, $0 for the
// match); s as it was when a search gives up.
func (r *Regex) Replace(s, repl string) string {
	out, err := r.re.Replace(s, repl, -1, -1)
	if err != nil {
		return s
	}
	return out
}

// RemoveAll is re.sub(pattern, "", s): every match taken out (s as it was when a
// search gives up).
func (r *Regex) RemoveAll(s string) string { return r.Replace(s, "") }

// IsSpace is Python's str.isspace of one character: Unicode's white space, and the
// separators \x1c to \x1f, which Python counts too and Go's unicode.IsSpace does not.
func IsSpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

// Strip is Python's str.strip(): s without the white space at either end.
func Strip(s string) string { return strings.TrimFunc(s, IsSpace) }
