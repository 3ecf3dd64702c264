// Package ifeval scores IFEval (Zhou et al., 2023) as lm-eval's ifeval task does: each
// of a prompt's verifiable instructions checked against the response, strictly (the
// response as it is) and loosely (also without its first line, its last, both, or its
// asterisks), per prompt (all followed) and per instruction.
//
// Two of lm-eval's checkers lean on Python models that evalflow does not have: nltk's
// punkt sentence splitter and word tokenizer, and langdetect. Here the splitter is
// punkt's algorithm with its English parameters (github.com/neurosnap/sentences), the
// word tokenizer a port of the rules of nltk's (text.go), and the language detector
// whatlanggo's trigrams; docs/tasks.md says how often each agrees with lm-eval's.
package ifeval

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/evalflow/evalflow/runner/task/pyjson"
	"github.com/evalflow/evalflow/runner/task/pyre"
)

// A check says whether a response follows one instruction.
type check func(response string) bool

// Instruction is one of a prompt's instructions, ready to check.
type Instruction struct {
	ID    string
	check check
}

// Follows says whether response follows the instruction: never when it is blank, as
// lm-eval's.
func (in Instruction) Follows(response string) bool {
	return pyre.Strip(response) != "" && in.check(response)
}

// Prompt is one IFEval prompt's instructions.
type Prompt []Instruction

// Build reads a prompt's instructions and their arguments (the dataset's kwargs; a
// falsy one dropped, as lm-eval drops it). An instruction lm-eval does not register,
// or an argument it would refuse, is an error.
func Build(ids []string, kwargs []map[string]any) (Prompt, error) {
	if len(ids) != len(kwargs) {
		return nil, fmt.Errorf("ifeval: %d instructions, %d kwargs", len(ids), len(kwargs))
	}
	p := make(Prompt, len(ids))
	for i, id := range ids {
		make, ok := registry[id]
		if !ok {
			return nil, fmt.Errorf("ifeval: instruction %q is not one lm-eval registers", id)
		}
		c, err := make(args(kwargs[i]))
		if err != nil {
			return nil, fmt.Errorf("ifeval: instruction %s: %w", id, err)
		}
		p[i] = Instruction{ID: id, check: c}
	}
	return p, nil
}

// Strict is whether response follows each instruction, as it is.
func (p Prompt) Strict(response string) []bool {
	out := make([]bool, len(p))
	for i, in := range p {
		out[i] = in.Follows(response)
	}
	return out
}

// Loose is whether some form of response follows each instruction: the response, it
// without asterisks, without its first line, its last, or both (each stripped), and
// those without asterisks.
func (p Prompt) Loose(response string) []bool {
	lines := strings.Split(response, "\n")
	join := func(ls []string) string { return pyre.Strip(strings.Join(ls, "\n")) }
	var first, last, both string
	if len(lines) > 0 {
		first, last = join(lines[1:]), join(lines[:len(lines)-1])
	}
	if len(lines) > 1 {
		both = join(lines[1 : len(lines)-1])
	}
	star := func(s string) string { return strings.ReplaceAll(s, "*", "") }
	forms := []string{response, star(response), first, last, both, star(first), star(last), star(both)}
	out := make([]bool, len(p))
	for i, in := range p {
		out[i] = slices.ContainsFunc(forms, in.Follows)
	}
	return out
}

// args are an instruction's arguments, the falsy ones dropped.
type args map[string]any

func (a args) str(k string) (string, bool) {
	s, ok := a[k].(string)
	return s, ok && s != ""
}

func (a args) int(k string) (int, bool) {
	f, ok := a[k].(float64)
	if !ok || f == 0 || f != math.Trunc(f) {
		if n, isInt := a[k].(int); isInt && n != 0 {
			return n, true
		}
		return 0, false
	}
	return int(f), true
}

func (a args) strs(k string) []string {
	list, _ := a[k].([]any)
	var out []string
	for _, v := range list {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// num and text are an argument lm-eval would otherwise draw at random: missing, it is
// an error (evalflow does not guess).
func (a args) num(k string) (int, error) {
	n, ok := a.int(k)
	if !ok {
		return 0, missing(k)
	}
	return n, nil
}

func (a args) text(k string) (string, error) {
	s, ok := a.str(k)
	if !ok {
		return "", missing(k)
	}
	return s, nil
}

func missing(k string) error {
	return fmt.Errorf("argument %s is missing (lm-eval would draw one at random)", k)
}

// relation is "less than" or "at least" applied: n < threshold, or n >= threshold.
func relation(a args, key string) (func(n, threshold int) bool, error) {
	r, ok := a.str(key)
	switch {
	case !ok:
		return nil, missing(key)
	case r == "less than":
		return func(n, t int) bool { return n < t }, nil
	case r == "at least":
		return func(n, t int) bool { return n >= t }, nil
	}
	return nil, fmt.Errorf("argument %s: %q is not less than or at least", key, r)
}

// counted is an instruction that compares a count with a threshold by a relation.
func counted(count func(string) int, thresholdKey, relationKey string) func(args) (check, error) {
	return func(a args) (check, error) {
		t, err := a.num(thresholdKey)
		if err != nil {
			return nil, err
		}
		rel, err := relation(a, relationKey)
		if err != nil {
			return nil, err
		}
		return func(r string) bool { return rel(count(r), t) }, nil
	}
}

// pattern compiles a Python regular expression of the checkers.
func pattern(p string) *pyre.Regex {
	re, err := pyre.Compile(p)
	if err != nil {
		panic(err) // the checkers' own patterns
	}
	return re
}

// compiled compiles a pattern built from an argument (lm-eval puts them in unescaped).
func compiled(p string) (*pyre.Regex, error) {
	re, err := pyre.Compile(p)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", p, err)
	}
	return re, nil
}

// count is how many times re matches s (findall's length; 0 when the search gives up).
func count(re *pyre.Regex, s string) int {
	m, err := re.FindAll(s)
	if err != nil {
		return 0
	}
	return len(m)
}

var (
	placeholder    = pattern(`\[.*?\]`)
	starBullet     = pattern(`(?m)^\s*\*[^\*].*$`)
	dashBullet     = pattern(`(?m)^\s*-.*$`)
	highlight      = pattern(`\*[^\n\*]*\*`)
	doubleHighligh = pattern(`\*\*[^\n\*]*\*\*`)
	paragraphRule  = pattern(`\s?\*\*\*\s?`)
	title          = pattern(`<<[^\n]+>>`)
)

// registry are lm-eval's registered instructions, each made from its arguments.
var registry = map[string]func(args) (check, error){
	"keywords:existence": func(a args) (check, error) {
		var res []*pyre.Regex
		for _, k := range a.strs("keywords") {
			re, err := compiled("(?i)" + k)
			if err != nil {
				return nil, err
			}
			res = append(res, re)
		}
		if len(res) == 0 {
			return nil, missing("keywords")
		}
		return func(r string) bool {
			for _, re := range res {
				if !re.Search(r) {
					return false
				}
			}
			return true
		}, nil
	},
	"keywords:frequency": func(a args) (check, error) {
		k, err := a.text("keyword")
		if err != nil {
			return nil, err
		}
		re, err := compiled("(?i)" + pyre.Strip(k))
		if err != nil {
			return nil, err
		}
		return counted(func(r string) int { return count(re, r) }, "frequency", "relation")(a)
	},
	"keywords:forbidden_words": func(a args) (check, error) {
		var res []*pyre.Regex
		for _, w := range a.strs("forbidden_words") {
			re, err := compiled(`(?i)\b` + w + `\b`)
			if err != nil {
				return nil, err
			}
			res = append(res, re)
		}
		if len(res) == 0 {
			return nil, missing("forbidden_words")
		}
		return func(r string) bool {
			for _, re := range res {
				if re.Search(r) {
					return false
				}
			}
			return true
		}, nil
	},
	"keywords:letter_frequency": func(a args) (check, error) {
		// A letter that is not one of a to z (prompts 1122 and 1129 ask for "#" and "!") lm-eval replaces
		// by one drawn at random, each time it checks; evalflow counts it as given.
		l, err := a.text("letter")
		if err != nil {
			return nil, err
		}
		letter := pyLower(pyre.Strip(l))
		t, err := a.num("let_frequency")
		if err != nil {
			return nil, fmt.Errorf("argument let_frequency: %w", err)
		}
		rel, ok := a.str("let_relation")
		if ok && rel != "less than" && rel != "at least" {
			return nil, fmt.Errorf("argument let_relation: %q is not less than or at least", rel)
		}
		return func(r string) bool {
			n := strings.Count(pyLower(r), letter)
			if rel == "less than" {
				return n < t
			}
			return n >= t
		}, nil
	},
	"language:response_language": func(a args) (check, error) {
		lang, err := a.text("language")
		if err != nil {
			return nil, err
		}
		return func(r string) bool {
			got, ok := detectLanguage(r)
			return !ok || got == lang // undetectable: lm-eval's langdetect raises, and it counts as followed
		}, nil
	},
	"length_constraints:number_sentences": counted(countSentences, "num_sentences", "relation"),
	"length_constraints:number_paragraphs": func(a args) (check, error) {
		n, err := a.num("num_paragraphs")
		if err != nil {
			return nil, err
		}
		return func(r string) bool {
			paragraphs := paragraphRule.Split(r)
			count := len(paragraphs)
			for i, p := range paragraphs {
				if pyre.Strip(p) == "" {
					if i != 0 && i != len(paragraphs)-1 {
						return false
					}
					count--
				}
			}
			return count == n
		}, nil
	},
	"length_constraints:number_words": counted(countWords, "num_words", "relation"),
	"length_constraints:nth_paragraph_first_word": func(a args) (check, error) {
		num, err := a.num("num_paragraphs")
		if err != nil {
			return nil, err
		}
		nth, ok := a.int("nth_paragraph")
		if !ok || nth <= 0 || nth > num {
			return nil, fmt.Errorf("argument nth_paragraph %d is not between 1 and num_paragraphs (lm-eval would draw one at random)", nth)
		}
		w, err := a.text("first_word")
		if err != nil {
			return nil, err
		}
		return func(r string) bool { return nthParagraphStartsWith(r, num, nth, pyLower(w)) }, nil
	},
	"detectable_content:number_placeholders": func(a args) (check, error) {
		n, err := a.num("num_placeholders")
		if err != nil {
			return nil, err
		}
		return func(r string) bool { return count(placeholder, r) >= n }, nil
	},
	"detectable_content:postscript": func(a args) (check, error) {
		m, err := a.text("postscript_marker")
		if err != nil {
			return nil, err
		}
		var p string
		switch m = pyre.Strip(m); m {
		case "P.P.S":
			p = `\s*p\.\s?p\.\s?s.*$`
		case "P.S.":
			p = `\s*p\.\s?s\..*$`
		default:
			p = `\s*` + pyLower(m) + `.*$`
		}
		re, err := compiled("(?m)" + p)
		if err != nil {
			return nil, err
		}
		return func(r string) bool { return count(re, pyLower(r)) > 0 }, nil
	},
	"detectable_format:number_bullet_lists": func(a args) (check, error) {
		n, err := a.num("num_bullets")
		if err != nil {
			return nil, err
		}
		return func(r string) bool { return count(starBullet, r)+count(dashBullet, r) == n }, nil
	},
	"detectable_format:constrained_response": func(args) (check, error) {
		return func(r string) bool {
			r = pyre.Strip(r)
			for _, option := range []string{"My answer is yes.", "My answer is no.", "My answer is maybe."} {
				if strings.Contains(r, option) {
					return true
				}
			}
			return false
		}, nil
	},
	"detectable_format:number_highlighted_sections": func(a args) (check, error) {
		n, err := a.num("num_highlights")
		if err != nil {
			return nil, err
		}
		return func(r string) bool { return highlights(r) >= n }, nil
	},
	"detectable_format:multiple_sections": func(a args) (check, error) {
		s, err := a.text("section_spliter")
		if err != nil {
			return nil, err
		}
		n, err := a.num("num_sections")
		if err != nil {
			return nil, err
		}
		re, err := compiled(`\s?` + pyre.Strip(s) + `\s?\d+\s?`)
		if err != nil {
			return nil, err
		}
		return func(r string) bool { return len(re.Split(r))-1 >= n }, nil
	},
	"detectable_format:json_format": func(args) (check, error) { return isJSON, nil },
	"detectable_format:title": func(args) (check, error) {
		return func(r string) bool {
			m, _ := title.FindAll(r)
			for _, t := range m {
				if pyre.Strip(strings.TrimRight(strings.TrimLeft(t[0], "<"), ">")) != "" {
					return true
				}
			}
			return false
		}, nil
	},
	"combination:two_responses": func(args) (check, error) { return twoResponses, nil },
	"combination:repeat_prompt": func(a args) (check, error) {
		p, err := a.text("prompt_to_repeat")
		if err != nil {
			return nil, err
		}
		p = pyLower(pyre.Strip(p))
		return func(r string) bool { return strings.HasPrefix(pyLower(pyre.Strip(r)), p) }, nil
	},
	"startend:end_checker": func(a args) (check, error) {
		e, err := a.text("end_phrase")
		if err != nil {
			return nil, err
		}
		e = pyLower(pyre.Strip(pyre.Strip(e)))
		return func(r string) bool { return strings.HasSuffix(pyLower(strings.Trim(pyre.Strip(r), `"`)), e) }, nil
	},
	"change_case:capital_word_frequency": func(a args) (check, error) {
		t, err := a.num("capital_frequency")
		if err != nil {
			return nil, err
		}
		rel, err := relation(a, "capital_relation")
		if err != nil {
			return nil, err
		}
		return func(r string) bool {
			n := 0
			for _, w := range wordTokens(r) {
				if isUpper(w) {
					n++
				}
			}
			return rel(n, t)
		}, nil
	},
	"change_case:english_capital": func(args) (check, error) {
		return func(r string) bool { return isUpper(r) && isLanguage(r, "en") }, nil
	},
	"change_case:english_lowercase": func(args) (check, error) {
		return func(r string) bool { return isLower(r) && isLanguage(r, "en") }, nil
	},
	"punctuation:no_comma": func(args) (check, error) {
		return func(r string) bool { return !strings.Contains(r, ",") }, nil
	},
	"startend:quotation": func(args) (check, error) {
		return func(r string) bool {
			r = pyre.Strip(r)
			return utf8.RuneCountInString(r) > 1 && strings.HasPrefix(r, `"`) && strings.HasSuffix(r, `"`)
		}, nil
	},
}

// Instructions are the instructions lm-eval registers, sorted.
func Instructions() []string { return slices.Sorted(maps.Keys(registry)) }

// isLanguage is whether text is in lang, or its language cannot be told (lm-eval's
// langdetect raises then, and the instruction counts as followed).
func isLanguage(text, lang string) bool {
	got, ok := detectLanguage(text)
	return !ok || got == lang
}

// highlights counts the *highlighted* and **highlighted** sections with something in
// them.
func highlights(r string) int {
	n := 0
	m, _ := highlight.FindAll(r)
	for _, h := range m {
		if pyre.Strip(strings.Trim(h[0], "*")) != "" {
			n++
		}
	}
	m, _ = doubleHighligh.FindAll(r)
	for _, h := range m {
		if pyre.Strip(strings.TrimSuffix(strings.TrimPrefix(h[0], "**"), "**")) != "" {
			n++
		}
	}
	return n
}

// nthParagraphStartsWith is whether r has num paragraphs (blank-line apart; blank ones
// not counted) and the nth's first word, up to its first punctuation, is word.
func nthParagraphStartsWith(r string, num, nth int, word string) bool {
	paragraphs := strings.Split(r, "\n\n")
	n := len(paragraphs)
	for _, p := range paragraphs {
		if pyre.Strip(p) == "" {
			n--
		}
	}
	if nth > n {
		return false
	}
	p := pyre.Strip(paragraphs[nth-1])
	if p == "" {
		return false
	}
	w := strings.TrimLeft(strings.TrimLeft(pyre.Strip(pyFields(p)[0]), "'"), `"`)
	var first strings.Builder
	for _, c := range w {
		if strings.ContainsRune(`.,?!'"`, c) {
			break
		}
		first.WriteString(pyLower(string(c)))
	}
	return n == num && first.String() == word
}

// isJSON is whether r, stripped of white space and of markdown's ``` fence (with
// json, Json or JSON after it), is JSON as Python's json.loads reads it (NaN and
// Infinity among its numbers).
func isJSON(r string) bool {
	r = pyre.Strip(r)
	for _, p := range []string{"```json", "```Json", "```JSON", "```"} {
		r = strings.TrimPrefix(r, p)
	}
	r = pyre.Strip(strings.TrimSuffix(r, "```"))
	if json.Valid([]byte(r)) {
		return true
	}
	return json.Valid(pyjson.Standard([]byte(r)))
}

// twoResponses is whether r is two different responses six asterisks apart (blank
// parts only at its ends).
func twoResponses(r string) bool {
	var valid []string
	parts := strings.Split(r, "******")
	for i, p := range parts {
		if pyre.Strip(p) == "" {
			if i != 0 && i != len(parts)-1 {
				return false
			}
			continue
		}
		valid = append(valid, p)
	}
	return len(valid) == 2 && pyre.Strip(valid[0]) != pyre.Strip(valid[1])
}
