// Package task is what every benchmark gives the engine: documents to ask, each with a
// prompt, a target, generation settings, and a scorer that applies the task's filters
// and metric to a response, as lm-evaluation-harness defines them.
package task

import "strings"

// Doc is one sample to ask.
type Doc struct {
	Task   string // lm-eval's task name, e.g. mmlu_anatomy or gsm8k_cot
	Group  string // the group it aggregates into (mmlu), or ""
	Index  int    // its row in the scored split
	Prompt string
	Target string
	// Stop sequences cut the generation (lm-eval's `until`).
	Stop      []string
	MaxTokens int
	// Score applies the task's filters to a response; the first result is the primary one.
	Score func(response string) []Filtered
}

// Filtered is one filter's answer and whether it is right.
type Filtered struct {
	Filter    string `json:"filter"`
	Extracted string `json:"extracted"`
	Correct   bool   `json:"correct"`
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
