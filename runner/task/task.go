// Package task is what every benchmark gives the engine: documents to ask, each with a
// prompt, a target, generation settings, and a scorer that applies the task's filters
// and metric to a response, as lm-evaluation-harness defines them.
package task

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode"

	evalflow "github.com/evalflow/evalflow/shared"
)

// Doc is one sample to ask.
type Doc struct {
	Task   string // lm-eval's task name, e.g. mmlu_anatomy or gsm8k_cot
	Group  string // the group it aggregates into (mmlu), or ""
	Index  int    // its row in the scored split
	Prompt string
	// Messages, when set, are the prompt as chat turns, as lm-eval builds them with
	// --apply_chat_template (its default few-shot as multi-turn): each example a user
	// turn and an assistant turn, then the question. Without them a chat request is
	// Prompt as one user message.
	Messages []Message
	Target   string
	// Stop sequences cut the generation (lm-eval's `until`).
	Stop      []string
	MaxTokens int
	// Method is how the sample is asked: Generate (the default), Logprobs or Loglikelihood.
	Method string
	// Metric names what Score measures: exact_match for generations, acc for choices.
	Metric string
	// Choices are the continuations scored by Logprobs and Loglikelihood (" A".." D").
	Choices []string
	// Contexts, when set, are each choice's own context in place of Prompt (a task
	// whose choices are its contexts, as winogrande's: the same continuation after each).
	Contexts []string
	// Score applies the task's filters to a generated response; the first result is
	// the primary one.
	Score func(response string) []Filtered
	// ScoreChoices picks an answer from the choices' log-probabilities (-Inf: unseen).
	ScoreChoices func(logprobs []float64) []Filtered
	// ScoreContinuation, when set, scores the one choice's log-likelihood and whether
	// it is the greedy continuation (lm-eval's loglikelihood tasks) in place of
	// ScoreChoices.
	ScoreContinuation func(loglikelihood float64, greedy bool) []Filtered
	// Config is the task's lm-eval config, shared by its docs (nil: none known).
	Config *Config
	// Program, when set, is the code a response makes (prompt, completion and tests),
	// scored by running it in a sandbox (HumanEval's pass@k) in place of Score.
	Program func(response string) Program
	// Repeats is how many responses are asked for the doc (lm-eval's repeats: 0 or 1
	// is one), each a program; PassAtK are the k its pass@k is estimated for.
	Repeats int
	PassAtK []int
	// Temperature and TopP are the generation's, as the task's generation_kwargs give
	// them (lm-eval sends temperature, 0 unless given, and any other kwarg as is).
	Temperature float64
	TopP        *float64
	// Groups are how Group and each group above it aggregate, innermost last, shared
	// by their docs (none: Group aggregates every metric and filter, weighted by size).
	Groups []*GroupConfig
}

// Program is a response's code to run, and the filter its outcome is reported under.
type Program struct {
	Code   string
	Filter string
}

// PassAtK is the unbiased estimate of pass@k from n programs of which c passed (HF
// code_eval's, which lm-eval uses): 1 - C(n-c, k) / C(n, k), as a product.
func PassAtK(n, c, k int) float64 {
	if n-c < k {
		return 1
	}
	p := 1.0
	for i := n - c + 1; i <= n; i++ {
		p *= 1 - float64(k)/float64(i)
	}
	return 1 - p
}

// Message is one chat turn of a prompt.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Methods of asking.
const (
	Generate      = "generate"      // chat completion; the answer is read from the text
	Logprobs      = "logprobs"      // chat completion's next-token top_logprobs over the choices
	Loglikelihood = "loglikelihood" // completion with echo + logprobs: each choice's log-likelihood
)

// Argmax is the index of the largest value; -1 when all are -Inf.
func Argmax(v []float64) int {
	best := -1
	for i, x := range v {
		if !math.IsInf(x, -1) && (best < 0 || x > v[best]) {
			best = i
		}
	}
	return best
}

// Filtered is one filter's answer and whether it is right.
type Filtered struct {
	Filter    string `json:"filter"`
	Extracted string `json:"extracted"`
	Correct   bool   `json:"correct"`
	// Value, when set, is the sample's score (TruthfulQA MC2's probability mass, a BLEU
	// score); otherwise the score is 1 when Correct, else 0.
	Value *float64 `json:"value,omitempty"`
	// Metric, when set, names what this result measures instead of the Doc's Metric
	// (a sample scored by several metrics, as truthfulqa_gen is).
	Metric string `json:"metric,omitempty"`
	// Values, when set, are the sample's scores of a list-valued metric (IFEval's
	// instruction-level accuracy: one an instruction), each counted alone.
	Values []float64 `json:"values,omitempty"`
	// Outcome is what became of a program a response made (passed, failed: why, timed
	// out, killed); of several (repeats), how many passed, and Outcomes each one's.
	Outcome  string   `json:"outcome,omitempty"`
	Outcomes []string `json:"outcomes,omitempty"`
}

// Score is the filter's value for aggregation.
func (f Filtered) Score() float64 {
	switch {
	case f.Value != nil:
		return *f.Value
	case f.Correct:
		return 1
	}
	return 0
}

// Until cuts response at the first stop sequence, as lm-eval's generate_until does.
func Until(response string, stop []string) string {
	cut := len(response)
	for _, s := range stop {
		if i := strings.Index(response, s); i >= 0 && i < cut {
			cut = i
		}
	}
	return response[:cut]
}

// FirstLine is a response's first non-blank line, trimmed: the answer of a task whose
// generation stops at "\n".
func FirstLine(response string) string {
	line, _, _ := strings.Cut(strings.TrimLeft(response, " \t\r\n"), "\n")
	return strings.TrimSpace(line)
}

// ExactMatch is lm-eval's exact_match with ignore_case and ignore_punctuation (and
// surrounding space ignored).
func ExactMatch(a, b string) bool { return normalize(a) == normalize(b) }

func normalize(s string) string {
	return strings.ToLower(strings.Map(func(r rune) rune {
		if unicode.IsPunct(r) || unicode.IsSymbol(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(s)))
}

// Select picks which of n documents to score: all (limit 0), the first limit (a count,
// limit >= 1) or the first ceil(limit*n) (a fraction, limit < 1), as lm-eval's --limit.
// With a seed the subset is drawn at random by that seed instead of taken from the
// start; either way the indices come in document order.
func Select(n int, limit float64, seed *int) []int {
	k := evalflow.LimitCount(n, limit)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	if seed != nil && k < n {
		r := rand.New(rand.NewPCG(uint64(*seed), 0x5eed))
		r.Shuffle(n, func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
		idx = idx[:k]
		slices.Sort(idx)
		return idx
	}
	return idx[:k]
}

// Picker chooses the indices of the documents to score out of n.
type Picker func(n int) []int

// Indices applies pick to n documents; a nil pick keeps them all.
func (pick Picker) Indices(n int) []int {
	if pick != nil {
		return pick(n)
	}
	return Select(n, 0, nil)
}

// Turns are d's prompt as chat messages: with multiturn its Messages as lm-eval's
// --apply_chat_template builds them (few-shot as multi-turn); without, as lm-eval's
// --fewshot_as_multiturn false: the system turn (the description), then the rest of
// the text prompt as one user message. A prompt without Messages is one user message.
func (d Doc) Turns(multiturn bool) []Message {
	switch {
	case len(d.Messages) == 0:
		return []Message{{Role: "user", Content: d.Prompt}}
	case multiturn:
		return d.Messages
	case d.Messages[0].Role == "system":
		sys := d.Messages[0]
		return []Message{sys, {Role: "user", Content: strings.TrimPrefix(d.Prompt, sys.Content)}}
	}
	return []Message{{Role: "user", Content: d.Prompt}}
}
