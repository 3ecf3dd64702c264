package pyre_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/runner/task/pyre"
)

// testdata/findall.json holds what CPython 3.11's re.findall gives, and what lm-eval's
// regex filter makes of it (group_select, tuples, strip, "[invalid]"), for lm-eval's
// own filter patterns (BBH's look-behind, gsm8k's strict and flexible, BBH's multiple
// choice) and Python-only syntax (named groups, inline flags).
func TestFindAllAndTheRegexFilterAreCPythons(t *testing.T) {
	b, err := os.ReadFile("testdata/findall.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Pattern, Text, Want string
		GroupSelect         int `json:"group_select"`
		FindAll             []json.RawMessage
	}
	if err := json.Unmarshal(b, &cases); err != nil || len(cases) < 10 {
		t.Fatalf("%d cases (%v)", len(cases), err)
	}
	for _, c := range cases {
		re, err := pyre.Compile(c.Pattern)
		if err != nil {
			t.Errorf("%q: %v", c.Pattern, err)
			continue
		}
		all, err := re.FindAll(c.Text)
		if err != nil {
			t.Fatal(err)
		}
		var want [][]string
		for _, m := range c.FindAll {
			var one string
			var tuple []string
			if json.Unmarshal(m, &one) == nil {
				tuple = []string{one}
			} else {
				json.Unmarshal(m, &tuple)
			}
			want = append(want, tuple)
		}
		if !slices.EqualFunc(all, want, slices.Equal) {
			t.Errorf("findall(%q, %q) = %q; CPython gives %q", c.Pattern, c.Text, all, want)
		}
		if got := re.Extract(c.Text, c.GroupSelect, "[invalid]"); got != c.Want {
			t.Errorf("regex filter %q (group_select %d) on %q = %q; lm-eval gives %q", c.Pattern, c.GroupSelect, c.Text, got, c.Want)
		}
	}
}

// A pattern that backtracks without end on an answer gives up on that answer.
func TestARunawayPatternGivesUp(t *testing.T) {
	re, err := pyre.Compile(`^(a+)+$`)
	if err != nil {
		t.Fatal(err)
	}
	long := make([]byte, 40)
	for i := range long {
		long[i] = 'a'
	}
	if got := re.Extract(string(long)+"!", 0, "[invalid]"); got != "[invalid]" {
		t.Errorf("got %q", got)
	}
}

// Strip drops what Python's str.strip drops: Unicode's white space and \x1c to \x1f,
// not a zero-width space.
func TestStripIsPythons(t *testing.T) {
	for in, want := range map[string]string{
		"\x1c B \x1f": "B", "\u3000B\u00a0": "B", "\u0085B\n": "B", "\u200bB": "\u200bB", "A B": "A B",
	} {
		if got := pyre.Strip(in); got != want {
			t.Errorf("Strip(%q) = %q; Python's %q", in, got, want)
		}
	}
}

// Search and Split are re.search and re.split: split keeps the groups' texts between
// the pieces, and indexes characters, not bytes.
func TestSearchAndSplitArePythons(t *testing.T) {
	re, err := pyre.Compile(`\s?\*\*\*\s?`)
	if err != nil {
		t.Fatal(err)
	}
	if got := re.Split("é one *** two ***"); len(got) != 3 || got[0] != "é one" || got[1] != "two" || got[2] != "" {
		t.Errorf("split %q", got)
	}
	grouped, _ := pyre.Compile(`(-)|(\+)`)
	if got := grouped.Split("a-b+c"); strings.Join(got, "|") != "a|-||b||+|c" {
		t.Errorf("split with groups %q; Python's ['a', '-', None, 'b', None, '+', 'c']", got)
	}
	if !re.Search("x***y") || re.Search("x**y") {
		t.Error("search")
	}
}

// \w is Python's: letters and numbers, not combining marks (Thai's ี, Bengali's ্).
func TestWordCharactersArePythons(t *testing.T) {
	re, _ := pyre.Compile(`\w+`)
	got, _ := re.FindAll("สเปรดชีต পণ্য x²_1 a‿b")
	var words []string
	for _, m := range got {
		words = append(words, m[0])
	}
	// Python: ['สเปรดช', 'ต', 'পণ', 'য', 'x²_1', 'a', 'b']
	if strings.Join(words, "|") != "สเปรดช|ต|পণ|য|x²_1|a|b" {
		t.Errorf("\\w+ finds %q", words)
	}
	cls, _ := pyre.Compile(`[\w.]+`)
	if m, _ := cls.FindAll("a.b ี"); len(m) != 1 || m[0][0] != "a.b" {
		t.Errorf("[\\w.]+ finds %q", m)
	}
}
