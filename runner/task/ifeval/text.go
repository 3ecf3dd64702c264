package ifeval

import (
	"strings"
	"sync"
	"unicode"

	"github.com/abadojack/whatlanggo"
	"github.com/neurosnap/sentences"
	"github.com/neurosnap/sentences/data"

	"github.com/evalflow/evalflow/runner/task/pyre"
)

// word is lm-eval's count_words token (nltk's RegexpTokenizer(r"\w+")).
var word = pattern(`\w+`)

// countWords is lm-eval's count_words: the runs of word characters.
func countWords(s string) int { return count(word, s) }

// punkt is the punkt sentence splitter with its English parameters, made once.
var punkt = sync.OnceValue(func() *sentences.DefaultSentenceTokenizer {
	b, err := data.Asset("data/english.json")
	if err != nil {
		panic(err) // embedded in the module
	}
	training, err := sentences.LoadTraining(b)
	if err != nil {
		panic(err)
	}
	return sentences.NewSentenceTokenizer(training)
})

// sentencesOf are s's sentences as punkt splits them (blank ones left out).
func sentencesOf(s string) []string {
	var out []string
	for _, sent := range punkt().Tokenize(s) {
		if pyre.Strip(sent.Text) != "" {
			out = append(out, sent.Text)
		}
	}
	return out
}

// countSentences is lm-eval's count_sentences: punkt's sentences.
func countSentences(s string) int { return len(sentencesOf(s)) }

// A rule is one substitution of nltk's word tokenizer.
type rule struct {
	re   *pyre.Regex
	repl string
}

func rules(pairs ...string) []rule {
	out := make([]rule, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, rule{pattern(pairs[i]), pairs[i+1]})
	}
	return out
}

// The rules of nltk's NLTKWordTokenizer (word_tokenize's, after punkt splits the
// sentences), in its order: opening quotes, punctuation, brackets, dashes, closing
// quotes, contractions.
var (
	startingQuotes = rules(
		"([«“‘„]|[`]+)", " $1 ",
		`^"`, "``",
		"(``)", " $1 ",
		`([ \(\[{<])("|'{2})`, "$1 `` ",
		`(?i)(')(?!re|ve|ll|m|t|s|d|n)(\w)\b`, "$1 $2",
	)
	punctuation = rules(
		`([^\.])(\.)([\]\)}>"'»”’ ]*)\s*$`, "$1 $2 $3 ",
		`([:,])([^\d])`, " $1 $2",
		`([:,])$`, " $1 ",
		`\.{2,}`, " $0 ",
		`[;@#$%&]`, " $0 ",
		`([^\.])(\.)([\]\)}>"']*)\s*$`, "$1 $2$3 ",
		`[?!]`, " $0 ",
		`([^'])' `, "$1 ' ",
		`[*]`, " $0 ",
		`[\]\[\(\)\{\}\<\>]`, " $0 ",
		`--`, " -- ",
	)
	endingQuotes = rules(
		"([»”’])", " $1 ",
		"''", " '' ",
		`"`, " '' ",
		`([^' ])('[sS]|'[mM]|'[dD]|') `, "$1 $2 ",
		`([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) `, "$1 $2 ",
	)
	contractions = rules(
		`(?i)\b(can)(?#X)(not)\b`, " $1 $2 ",
		`(?i)\b(d)(?#X)('ye)\b`, " $1 $2 ",
		`(?i)\b(gim)(?#X)(me)\b`, " $1 $2 ",
		`(?i)\b(gon)(?#X)(na)\b`, " $1 $2 ",
		`(?i)\b(got)(?#X)(ta)\b`, " $1 $2 ",
		`(?i)\b(lem)(?#X)(me)\b`, " $1 $2 ",
		`(?i)\b(more)(?#X)('n)\b`, " $1 $2 ",
		`(?i)\b(wan)(?#X)(na)(?=\s)`, " $1 $2 ",
		`(?i) ('t)(?#X)(is)\b`, " $1 $2 ",
		`(?i) ('t)(?#X)(was)\b`, " $1 $2 ",
	)
)

// wordTokens are s's words as nltk's word_tokenize gives them: each punkt sentence
// tokenized by NLTKWordTokenizer's rules.
func wordTokens(s string) []string {
	var out []string
	for _, sent := range sentencesOf(s) {
		t := sent
		for _, group := range [][]rule{startingQuotes, punctuation} {
			for _, r := range group {
				t = r.re.Replace(t, r.repl)
			}
		}
		t = " " + t + " "
		for _, group := range [][]rule{endingQuotes, contractions} {
			for _, r := range group {
				t = r.re.Replace(t, r.repl)
			}
		}
		out = append(out, pyFields(t)...)
	}
	return out
}

// pyFields is Python's str.split(): s's runs of non-white-space.
func pyFields(s string) []string { return strings.FieldsFunc(s, pyre.IsSpace) }

// pyLower is Python's str.lower (Go's simple case mapping: Python's full one differs
// for a few letters, as İ, and a final Σ).
func pyLower(s string) string { return strings.ToLower(s) }

// isUpper is Python's str.isupper: some cased letter, and none lower or title case.
func isUpper(s string) bool { return cased(s, unicode.IsUpper) }

// isLower is Python's str.islower: some cased letter, and none upper or title case.
func isLower(s string) bool { return cased(s, unicode.IsLower) }

func cased(s string, is func(rune) bool) bool {
	found := false
	for _, r := range s {
		if unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) {
			if !is(r) {
				return false
			}
			found = true
		}
	}
	return found
}

// detectLanguage is text's language (ISO 639-1), by whatlanggo's trigrams where
// lm-eval asks langdetect; false when it cannot be told (no letters).
func detectLanguage(text string) (string, bool) {
	info := whatlanggo.Detect(text)
	if info.Script == nil {
		return "", false
	}
	return info.Lang.Iso6391(), true
}

// pyUpper is Python's str.upper (Go's simple case mapping).
func pyUpper(s string) string { return strings.ToUpper(s) }
