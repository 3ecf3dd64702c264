// Package gsm8k renders GSM8K as lm-evaluation-harness's gsm8k (5-shot, its examples
// drawn from the train split as lm-eval draws them: Python's Random(1234).sample, one
// draw a document in order) and gsm8k_cot (8-shot chain of thought with fixed
// exemplars) tasks, and scores answers with their strict-match and flexible-extract
// filters and exact_match normalisation.
package gsm8k

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/pyrandom"
	"github.com/evalflow/evalflow/runner/task/source"
)

// Variants.
const (
	FewShot  = "fewshot"  // gsm8k, lm-eval's default: "Question: ..\nAnswer:", 5 examples from train
	CoT      = "cot"      // gsm8k_cot: "Q: ..\nA:", 8 fixed exemplars
	ZeroShot = "zeroshot" // gsm8k with no examples (num_fewshot 0)
)

// DefaultShots is lm-eval's num_fewshot for gsm8k; FewshotSeed its default few-shot
// seed (--fewshot_random_seed).
const (
	DefaultShots = 5
	FewshotSeed  = 1234
)

// Item is one GSM8K row.
type Item struct {
	Question string `json:"question"`
	Answer   string `json:"answer"`
}

// Target is the number after "####".
func (it Item) Target() string {
	parts := strings.Split(it.Answer, "####")
	return strings.TrimSpace(parts[len(parts)-1])
}

// Load reads dataDir/gsm8k/test.jsonl.
func Load(dataDir string) ([]Item, error) { return LoadSplit(dataDir, "test") }

// LoadSplit reads dataDir/gsm8k/SPLIT.jsonl (test, train).
func LoadSplit(dataDir, split string) ([]Item, error) {
	items, err := source.JSONLines[Item](filepath.Join(dataDir, "gsm8k", split+".jsonl"), false)
	if err != nil {
		return nil, fmt.Errorf("gsm8k: %w", err)
	}
	return items, nil
}

// exemplar is one of gsm8k_cot's fixed few-shot examples.
type exemplar struct{ question, target string }

// exemplars are gsm8k_cot's eight (Wei et al., chain-of-thought prompting).
var exemplars = []exemplar{
	{"There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
		"There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6."},
	{"If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
		"There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."},
	{"Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
		"Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39."},
	{"Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
		"Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8."},
	{"Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
		"Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9."},
	{"There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
		"There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29."},
	{"Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
		"Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33."},
	{"Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
		"Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8."},
}

// Prompt renders a question in a variant with numFewshot exemplars (CoT only).
func Prompt(variant, q string, numFewshot int) string {
	if variant != CoT {
		return question(Item{Question: q})
	}
	var b strings.Builder
	for _, e := range exemplars[:numFewshot] {
		b.WriteString("Q: " + e.question + "\nA: " + e.target + "\n\n")
	}
	b.WriteString("Q: " + q + "\nA:")
	return b.String()
}

// MaxFewshot is how many exemplars the CoT variant has.
const MaxFewshot = 8

var (
	strictCoT  = regexp.MustCompile(`The answer is (\-?[0-9\.\,]+).`)
	strictZero = regexp.MustCompile(`#### (\-?[0-9\.\,]+)`)
	flexible   = regexp.MustCompile(`(-?[$0-9.,]{2,})|(-?[0-9]+)`)
	ignored    = []*regexp.Regexp{regexp.MustCompile(`,`), regexp.MustCompile(`\$`), regexp.MustCompile(`(?s).*#### `), regexp.MustCompile(`\.$`)}
)

// Invalid is what a filter yields when nothing matches (lm-eval's fallback).
const Invalid = "[invalid]"

// extract applies a regex filter: the match at group select (0 first, -1 last), the
// first non-empty group of it, trimmed; Invalid when nothing matches.
func extract(re *regexp.Regexp, s string, last bool) string {
	all := re.FindAllStringSubmatch(s, -1)
	if len(all) == 0 {
		return Invalid
	}
	m := all[0]
	if last {
		m = all[len(all)-1]
	}
	if len(m) == 1 {
		return strings.TrimSpace(m[0])
	}
	for _, g := range m[1:] {
		if g != "" {
			return strings.TrimSpace(g)
		}
	}
	return Invalid
}

// normalize is exact_match's: regexes_to_ignore removed, then lower case.
func normalize(s string) string {
	for _, re := range ignored {
		s = re.ReplaceAllString(s, "")
	}
	return strings.ToLower(s)
}

// Score applies both filters of variant to a response.
func Score(variant, response, target string) []task.Filtered {
	strict := strictZero
	if variant == CoT {
		strict = strictCoT
	}
	out := []task.Filtered{
		{Filter: "strict-match", Extracted: extract(strict, response, false)},
		{Filter: "flexible-extract", Extracted: extract(flexible, response, true)},
	}
	for i := range out {
		out[i].Correct = normalize(out[i].Extracted) == normalize(target)
	}
	return out
}

// Docs renders the test split for variant: the items pick chooses (nil: all).
func Docs(dataDir, variant string, numFewshot int, pick task.Picker) ([]task.Doc, error) {
	if variant == "" {
		variant = FewShot
	}
	if err := checkShots(variant, numFewshot); err != nil {
		return nil, err
	}
	items, err := Load(dataDir)
	if err != nil {
		return nil, err
	}
	name, stop := "gsm8k", []string{"Question:", "</s>", "<|im_end|>"}
	if variant == CoT {
		name, stop = "gsm8k_cot", []string{"Q:", "</s>", "<|im_end|>"}
	}
	idx := pick.Indices(len(items))
	prompts := make([]string, len(idx))
	turns := make([][]task.Message, len(idx))
	switch {
	case variant == FewShot && numFewshot > 0:
		train, err := LoadSplit(dataDir, "train")
		if err != nil {
			return nil, err
		}
		if numFewshot > len(train) {
			return nil, fmt.Errorf("gsm8k: num_fewshot %d: the train split has %d examples", numFewshot, len(train))
		}
		prompts, turns = fewshot(items, train, idx, numFewshot)
	default:
		for n, i := range idx {
			prompts[n] = Prompt(variant, items[i].Question, numFewshot)
		}
	}
	docs := make([]task.Doc, len(idx))
	for n, i := range idx {
		target := items[i].Target()
		docs[n] = task.Doc{Task: name, Index: i, Prompt: prompts[n], Messages: turns[n], Target: target,
			Method: task.Generate, Metric: "exact_match", Stop: stop, MaxTokens: 256,
			Score: func(resp string) []task.Filtered { return Score(variant, resp, target) }}
	}
	return docs, nil
}

// checkShots refuses a variant that is not one, or a num_fewshot it cannot take.
func checkShots(variant string, numFewshot int) error {
	switch {
	case variant != FewShot && variant != CoT && variant != ZeroShot:
		return fmt.Errorf("gsm8k: unknown variant %q (%s, %s, %s)", variant, FewShot, CoT, ZeroShot)
	case numFewshot < 0, variant == CoT && numFewshot > MaxFewshot, variant == ZeroShot && numFewshot > 0:
		return fmt.Errorf("gsm8k: num_fewshot %d: %s takes 0..%d", numFewshot, variant, map[string]int{CoT: MaxFewshot, ZeroShot: 0, FewShot: 7473}[variant])
	}
	return nil
}

// Shots is the variant's num_fewshot by default.
func Shots(variant string) int {
	switch variant {
	case CoT:
		return MaxFewshot
	case ZeroShot:
		return 0
	}
	return DefaultShots
}

// Config is lm-eval's config of variant's task (gsm8k_cot or gsm8k): two filters,
// strict-match and flexible-extract, each a regex then take_first.
func Config(variant string, numFewshot int) task.Config {
	name, strict, fewshotSplit := "gsm8k", strictZero, ""
	if variant == CoT {
		name, strict = "gsm8k_cot", strictCoT
	}
	if variant != CoT && numFewshot > 0 {
		fewshotSplit = "train"
	}
	em := task.Mean("exact_match")
	em.IgnoreCase = true
	for _, re := range ignored {
		em.RegexesToIgnore = append(em.RegexesToIgnore, re.String())
	}
	filter := func(name string, re *regexp.Regexp, group int) task.FilterConfig {
		return task.FilterConfig{Name: name, Filter: []task.FilterStep{
			{Function: "regex", RegexPattern: re.String(), GroupSelect: group}, {Function: "take_first"}}}
	}
	return task.Config{Task: name, DatasetPath: "gsm8k", DatasetName: "main", TestSplit: "test", FewshotSplit: fewshotSplit,
		NumFewshot: numFewshot, MetricList: []task.MetricConfig{em}, Metadata: task.Metadata{Version: 3.0},
		FilterList: []task.FilterConfig{filter("strict-match", strict, 0), filter("flexible-extract", flexible, -1)}}
}

// question is lm-eval's gsm8k doc_to_text.
func question(it Item) string { return "Question: " + it.Question + "\nAnswer:" }

// fewshot renders gsm8k's prompts with examples from train, as lm-eval does: the
// examples of document d are the d+1-th draw of Random(FewshotSeed).sample(train,
// shots) (lm-eval draws once a document, in document order), each example its
// question, the target delimiter " ", its whole answer and the few-shot delimiter
// "\n\n". It gives the text prompt (completions) and the chat turns (lm-eval's
// --apply_chat_template, few-shot as multi-turn) of each document of idx (ascending).
func fewshot(items, train []Item, idx []int, shots int) (prompts []string, turns [][]task.Message) {
	r := pyrandom.New(FewshotSeed)
	next := 0 // the next document whose draw is due
	for _, d := range idx {
		var draw []int
		for ; next <= d; next++ {
			draw = r.Sample(len(train), shots)
		}
		var b strings.Builder
		var msgs []task.Message
		for _, e := range draw {
			q, a := question(train[e]), train[e].Answer
			b.WriteString(q + " " + a + "\n\n")
			msgs = append(msgs, task.Message{Role: "user", Content: q}, task.Message{Role: "assistant", Content: a})
		}
		q := question(items[d])
		b.WriteString(q)
		prompts = append(prompts, b.String())
		turns = append(turns, append(msgs, task.Message{Role: "user", Content: q}))
	}
	return prompts, turns
}
