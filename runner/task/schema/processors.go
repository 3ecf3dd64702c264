package schema

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2/v2"

	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/ifeval"
	"github.com/evalflow/evalflow/runner/task/pyre"
)

// A step is one filter of a chain, given the response so far and the document.
type step func(resp string, doc map[string]any) string

// processors are the Go processors a filter's `!function` may name: lm-eval's BBH
// filters (its tasks' utils.py), each as lm-eval's Python computes it.
var processors = map[string]func(FilterStep) (step, error){
	"utils.MultiChoiceRegexFilter": multiChoiceFilter,
	"utils.NumberParseRegexFilter": numberParseFilter,
	"utils.MapRegexFilter":         mapRegexFilter,
	"utils.WordSortFilter":         func(FilterStep) (step, error) { return wordSort, nil },
}

// A resultsProcessor scores a multiple-choice document from its choices'
// log-likelihoods in place of acc (lm-eval's process_results).
type resultsProcessor func(doc map[string]any, lls []float64, choices []string) []task.Filtered

// resultsProcessors are the Go processors process_results may name.
var resultsProcessors = map[string]resultsProcessor{
	"utils.process_results_mc2": truthfulMC2,
}

// truthfulMC2 is TruthfulQA's mc2 score: the choices' probabilities normalised to sum
// to 1, the mass on those mc2_targets labels true. (lm-eval exponentiates each
// log-likelihood as it is, which underflows to 0/0 where all are below about -745;
// here they are shifted by the largest first: the same value wherever lm-eval's is a
// number.)
func truthfulMC2(doc map[string]any, lls []float64, choices []string) []task.Filtered {
	targets, _ := doc["mc2_targets"].(map[string]any)
	labels, _ := targets["labels"].([]any)
	top := math.Inf(-1)
	for _, ll := range lls {
		top = max(top, ll)
	}
	var all, right float64
	for i, ll := range lls {
		p := math.Exp(ll - top)
		all += p
		if i < len(labels) && fmt.Sprint(labels[i]) == "1" {
			right += p
		}
	}
	mass := right / all
	out := task.Filtered{Filter: "none", Metric: "acc", Value: &mass, Correct: mass > 0.5}
	if i := task.Argmax(lls); i >= 0 {
		out.Extracted = choices[i]
	}
	return []task.Filtered{out}
}

// A docsProcessor is process_docs: a document as the task asks it.
type docsProcessor func(doc map[string]any) map[string]any

// docsProcessors are the Go processors process_docs may name.
var docsProcessors = map[string]docsProcessor{
	"utils.process_docs_gen": truthfulGenDoc,
}

// truthfulGenDoc is TruthfulQA's process_docs_gen: the question stripped, each answer
// stripped and ending in a period (empty ones dropped), "I have no comment." among the
// correct ones.
func truthfulGenDoc(doc map[string]any) map[string]any {
	out := maps.Clone(doc)
	q, _ := doc["question"].(string)
	out["question"] = pyre.Strip(q)
	correct := truthfulAnswers(texts(doc["correct_answers"]))
	if !slices.Contains(correct, "I have no comment.") {
		correct = append(correct, "I have no comment.")
	}
	out["correct_answers"] = correct
	out["incorrect_answers"] = truthfulAnswers(texts(doc["incorrect_answers"]))
	return out
}

// texts is a document's list of strings, as read ([]any) or as processed ([]string).
func texts(v any) []string {
	if l, ok := v.([]string); ok {
		return l
	}
	l, _ := v.([]any)
	return stringsOf(l)
}

// A generationProcessor is process_results of a generate_until task: the response
// scored against the document.
type generationProcessor func(doc map[string]any, response string) []task.Filtered

// generationProcessors are the Go processors a generate_until task's process_results
// may name.
var generationProcessors = map[string]generationProcessor{
	"utils.process_results_gen": func(doc map[string]any, response string) []task.Filtered {
		return truthfulGenScores(response, texts(doc["correct_answers"]), texts(doc["incorrect_answers"]))
	},
	"utils.process_results": ifevalResults, // IFEval's
}

// customFilters are the Go processors a custom filter's filter_fn may name: each takes
// a response and its document.
var customFilters = map[string]step{
	// HumanEval's: the prompt, then the completion (a program to test).
	"utils.build_predictions": func(resp string, doc map[string]any) string {
		prompt, _ := doc["prompt"].(string)
		return prompt + resp
	},
}

// ifevalResults is IFEval's process_results: whether the response follows all of the
// document's instructions and each of them, strictly and loosely. A document whose
// instructions do not read scores none followed, saying why.
func ifevalResults(doc map[string]any, response string) []task.Filtered {
	var kwargs []map[string]any
	list, _ := doc["kwargs"].([]any)
	for _, k := range list {
		m, _ := k.(map[string]any)
		kwargs = append(kwargs, m)
	}
	p, err := ifeval.Build(texts(doc["instruction_id_list"]), kwargs)
	if err != nil {
		return []task.Filtered{{Filter: "none", Metric: "prompt_level_strict_acc", Extracted: "[invalid] " + err.Error()}}
	}
	out := make([]task.Filtered, 0, 4)
	for _, level := range []struct {
		name    string
		follows []bool
	}{{"strict", p.Strict(response)}, {"loose", p.Loose(response)}} {
		all := !slices.Contains(level.follows, false)
		values := make([]float64, len(level.follows))
		for i, f := range level.follows {
			if f {
				values[i] = 1
			}
		}
		out = append(out, task.Filtered{Filter: "none", Metric: "prompt_level_" + level.name + "_acc", Correct: all},
			task.Filtered{Filter: "none", Metric: "inst_level_" + level.name + "_acc", Correct: all, Values: values})
	}
	// lm-eval's order: prompt strict, inst strict, prompt loose, inst loose.
	return out
}

// A docProcessor is a document field lm-eval computes in Python: a string, an int
// (doc_to_text's gold index for a task whose choices are its contexts), or a list.
type docProcessor func(doc map[string]any) (any, error)

// docProcessors are the Go processors doc_to_text, doc_to_target and doc_to_choice
// may name.
var docProcessors = map[string]docProcessor{
	"preprocess_winogrande.doc_to_text":   winograndeGold,
	"preprocess_winogrande.doc_to_target": winograndeTarget,
	"preprocess_winogrande.doc_to_choice": winograndeContexts,
}

// blank is where a WinoGrande sentence's "_" is.
func blank(doc map[string]any) (string, int, error) {
	s, _ := doc["sentence"].(string)
	i := strings.Index(s, "_")
	if i < 0 {
		return "", 0, fmt.Errorf("sentence %q has no _", clip(s))
	}
	return s, i, nil
}

// winograndeGold is the right option's index: answer "1" or "2".
func winograndeGold(doc map[string]any) (any, error) {
	switch doc["answer"] {
	case "1":
		return 0, nil
	case "2":
		return 1, nil
	}
	return nil, fmt.Errorf("answer %v is neither \"1\" nor \"2\"", doc["answer"])
}

// winograndeTarget is the sentence after the blank, stripped (Python's strip).
func winograndeTarget(doc map[string]any) (any, error) {
	s, i, err := blank(doc)
	if err != nil {
		return nil, err
	}
	return pyre.Strip(s[i+1:]), nil
}

// winograndeContexts are the sentence up to the blank with each option in it.
func winograndeContexts(doc map[string]any) (any, error) {
	s, i, err := blank(doc)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, k := range []string{"option1", "option2"} {
		o, _ := doc[k].(string)
		out = append(out, s[:i]+o)
	}
	return out, nil
}

// defaultPattern is lm-eval's RegexFilter's pattern when a filter names none.
const defaultPattern = `#### (\-?[0-9\.\,]+)`

// extended is lm-eval's ExtendedRegexFilter: a pattern, the match it selects, and
// what a response loses before a fallback search (regexes to ignore, case,
// punctuation: every Unicode character of a P category).
type extended struct {
	re       *pyre.Regex
	group    int
	fallback string
	ignore   []*pyre.Regex
	lower    bool
	punct    bool
}

func newExtended(st FilterStep, pattern string) (*extended, error) {
	re, err := pyre.Compile(cmp.Or(pattern, defaultPattern))
	if err != nil {
		return nil, err
	}
	e := &extended{re: re, group: st.GroupSelect, fallback: "[invalid]", lower: st.IgnoreCase, punct: st.IgnorePunctuation}
	if st.Fallback != nil {
		e.fallback = *st.Fallback
	}
	for _, s := range st.RegexesToIgnore {
		r, err := pyre.Compile(s)
		if err != nil {
			return nil, err
		}
		e.ignore = append(e.ignore, r)
	}
	return e, nil
}

// ignores is filter_ignores.
func (e *extended) ignores(s string) string {
	for _, r := range e.ignore {
		s = r.RemoveAll(s)
	}
	if e.lower {
		s = strings.ToLower(s)
	}
	if e.punct {
		s = strings.Map(func(r rune) rune {
			if unicode.IsPunct(r) {
				return -1
			}
			return r
		}, s)
	}
	return s
}

// find is find_match: the selected match's first group that matched (or the match),
// stripped, then converted when convert has it; "" for none (Python's falsy match).
func (e *extended) find(re *pyre.Regex, resp string, convert map[string]string) string {
	m := re.Extract(resp, e.group, "")
	if v, ok := convert[m]; ok && m != "" {
		return v
	}
	return m
}

// multiChoiceFilter is MultiChoiceRegexFilter: the pattern; else the text of one of
// the document's "(X) text" options found in the response (both without what the
// filter ignores), as its "(X)"; else ": X" as "(X)".
func multiChoiceFilter(st FilterStep) (step, error) {
	e, err := newExtended(st, st.RegexPattern)
	if err != nil {
		return nil, err
	}
	return func(resp string, doc map[string]any) string {
		input, _ := doc["input"].(string)
		var texts, letters []string
		toAlpha, toTarget := map[string]string{}, map[string]string{}
		for i, m := range optionRE.FindAllStringSubmatch(input, -1) {
			letter := string(rune('A' + i))
			text := e.ignores(pyre.Strip(m[1]))
			texts = append(texts, regexp2.Escape(text))
			toAlpha[text] = "(" + letter + ")"
			letters = append(letters, letter)
			toTarget[letter] = "(" + letter + ")"
		}
		match := e.find(e.re, resp, nil)
		if match == "" {
			if re, err := pyre.Compile(strings.Join(texts, "|")); err == nil {
				match = e.find(re, e.ignores(resp), toAlpha)
			}
		}
		if match == "" {
			if re, err := pyre.Compile(`:[\s]*(` + strings.Join(letters, "|") + `)`); err == nil {
				match = e.find(re, resp, toTarget)
			}
		}
		return cmp.Or(match, e.fallback)
	}, nil
}

// optionRE finds a BBH question's options, "(A) text".
var optionRE = regexp.MustCompile(`\([A-Z]\)([^\n^(]*)`)

// numberParseFilter is NumberParseRegexFilter: the pattern; else a number in English
// words in the lowercased response, as word2number reads it.
func numberParseFilter(st FilterStep) (step, error) {
	e, err := newExtended(st, st.RegexPattern)
	if err != nil {
		return nil, err
	}
	return func(resp string, _ map[string]any) string {
		if m := e.find(e.re, resp, nil); m != "" {
			return m
		}
		if m := e.find(englishNumber, strings.ToLower(resp), nil); m != "" {
			if n, ok := wordToNum(m); ok {
				return n
			}
		}
		return e.fallback
	}, nil
}

// mapRegexFilter is MapRegexFilter: the patterns joined by "|" find the answer (in the
// response without what the filter ignores), and the first pattern that finds
// something in that answer gives its value.
func mapRegexFilter(st FilterStep) (step, error) {
	patterns := make([]string, len(st.RegexPatternToValue))
	regexes := make([]*pyre.Regex, len(st.RegexPatternToValue))
	for i, kv := range st.RegexPatternToValue {
		patterns[i] = kv.Key
		re, err := pyre.Compile(kv.Key)
		if err != nil {
			return nil, err
		}
		regexes[i] = re
	}
	e, err := newExtended(st, strings.Join(patterns, "|"))
	if err != nil {
		return nil, err
	}
	return func(resp string, _ map[string]any) string {
		whole := e.find(e.re, e.ignores(resp), nil)
		if whole == "" {
			return e.fallback
		}
		for i, re := range regexes {
			if e.find(re, e.ignores(whole), nil) != "" {
				return st.RegexPatternToValue[i].Value
			}
		}
		return e.fallback
	}, nil
}

// wordSort is WordSortFilter: the document's words (after "List:") found in the
// response as whole words, each once, in the order of its last occurrence.
func wordSort(resp string, doc map[string]any) string {
	input, _ := doc["input"].(string)
	_, list, ok := strings.Cut(input, "List:")
	if !ok {
		return ""
	}
	list, _, _ = strings.Cut(list, "List:") // Python's split(...)[1]
	words := strings.Fields(list)
	alts := make([]string, len(words))
	for i, w := range words {
		alts[i] = `\b` + w + `\b`
	}
	re, err := pyre.Compile(strings.Join(alts, "|"))
	if err != nil {
		return ""
	}
	all, err := re.FindAll(resp)
	if err != nil {
		return ""
	}
	seen := map[string]bool{}
	var out []string
	for i := len(all) - 1; i >= 0; i-- {
		if w := all[i][0]; !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return strings.Join(out, " ")
}

// englishNumber finds numbers written in English words as lm-eval's filter does. Its
// pattern (for Python's regex module) spells "(?|teen|ty)" where "(?:|teen|ty)" was
// meant: a branch-reset group of two branches, so "six", "seven", "nine" and "eight"
// are numbers only between other number words, never alone, first or last. Its groups
// hold no captures, so a plain group is the same here.
var englishNumber = func() *pyre.Regex {
	tens := `(?:twen|thir|for|fif|six|seven|nine)`
	small := `zero|one|two|three|four|five|`
	big := `|ten|eleven|twelve|fourteen|hundred|thousand|(?:m|b|tr)illion`
	first := small + tens + `(?:teen|ty)|eight(?:|een|y)` + big
	between := small + tens + `(?:|teen|ty)|eight(?:een|y)` + big
	last := small + tens + `(?:teen|ty)|eight(?:een|y)` + big
	re, err := pyre.Compile(`((?:(?:` + first + `)(?:` + between + `|[^\S\r\n]|,|and|&)+)?(?:` + last + `))`)
	if err != nil {
		panic(err)
	}
	return re
}()

// numberWords are word2number's words and their values.
var numberWords = map[string]int{
	"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
	"eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
	"fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
	"nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
	"seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
	"million": 1000000, "billion": 1000000000,
}

// wordToNum is word2number's word_to_num on what englishNumber finds (never a
// "point"): the number words kept, split at billion, million and thousand, each part
// formed as word2number forms it. false where word2number raises.
func wordToNum(s string) (string, bool) {
	var words []string
	for _, w := range strings.Fields(strings.ToLower(strings.ReplaceAll(s, "-", " "))) {
		if _, ok := numberWords[w]; ok {
			words = append(words, w)
		}
	}
	index := func(w string) int {
		i, n := -1, 0
		for j, x := range words {
			if x == w {
				n++
				if i < 0 {
					i = j
				}
			}
		}
		if n > 1 {
			return -2
		}
		return i
	}
	bi, mi, th := index("billion"), index("million"), index("thousand")
	switch {
	case len(words) == 0, bi == -2, mi == -2, th == -2:
		return "", false
	case th > -1 && (th < mi || th < bi), mi > -1 && mi < bi:
		return "", false
	case len(words) == 1:
		return fmt.Sprint(numberWords[words[0]]), true
	}
	total, ok := 0, true
	form := func(part []string) int {
		n, good := formNumber(part)
		ok = ok && good
		return n
	}
	if bi > -1 {
		total += form(words[:bi]) * 1000000000
	}
	if mi > -1 {
		total += form(words[max(bi+1, 0):mi]) * 1000000
	}
	if th > -1 {
		total += form(words[max(mi+1, bi+1, 0):th]) * 1000
	}
	last := len(words) - 1
	switch {
	case th > -1 && th != last:
		total += form(words[th+1:])
	case mi > -1 && mi != last: // word2number's order, even past a trailing thousand
		total += form(words[mi+1:])
	case bi > -1 && bi != last:
		total += form(words[bi+1:])
	case th == -1 && mi == -1 && bi == -1:
		total += form(words)
	}
	return fmt.Sprint(total), ok
}

// formNumber is word2number's number_formation: a*b+c+d of four, a*b+c of three, a*b
// or a+b of two (a product when one is a hundred), the first of one or more than four.
func formNumber(part []string) (int, bool) {
	n := make([]int, len(part))
	for i, w := range part {
		n[i] = numberWords[w]
	}
	switch len(n) {
	case 0:
		return 0, false // word2number's IndexError
	case 4:
		return n[0]*n[1] + n[2] + n[3], true
	case 3:
		return n[0]*n[1] + n[2], true
	case 2:
		if n[0] == 100 || n[1] == 100 {
			return n[0] * n[1], true
		}
		return n[0] + n[1], true
	}
	return n[0], true
}
