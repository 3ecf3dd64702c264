// Package mmlu renders MMLU as lm-evaluation-harness's generative MMLU task does and
// scores the answers.
//
// Prompt: the subject's description line, then num_fewshot examples from the dev split
// ("question\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer: X") each followed by a blank line,
// then the question, ending in "Answer:". The model's first line is the answer; it is
// right when it equals the letter, ignoring case and punctuation (exact_match).
package mmlu

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/evalflow/evalflow/runner/task"
)

// Invalid is the answer when no choice could be read.
const Invalid = "[invalid]"

// Letters are the choice labels.
var Letters = []string{"A", "B", "C", "D"}

// Question is one MMLU row.
type Question struct {
	Text    string
	Choices [4]string
	Answer  string // "A".."D"
}

// Load reads a subject's split ("dev", "val" or "test") from dataDir/mmlu.
func Load(dataDir, subject, split string) ([]Question, error) {
	path := filepath.Join(dataDir, "mmlu", split, subject+"_"+split+".csv")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mmlu: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = 6
	var qs []Question
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return qs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("mmlu: %s: %w", path, err)
		}
		q := Question{Text: rec[0], Answer: strings.TrimSpace(rec[5])}
		copy(q.Choices[:], rec[1:5])
		if !strings.Contains("ABCD", q.Answer) || len(q.Answer) != 1 {
			return nil, fmt.Errorf("mmlu: %s: row %d: answer %q is not A-D", path, len(qs)+1, q.Answer)
		}
		qs = append(qs, q)
	}
}

// Description is the subject's instruction line, as lm-eval writes it.
func Description(subject string) string {
	return "The following are multiple choice questions (with answers) about " + strings.ReplaceAll(subject, "_", " ") + ".\n\n"
}

// Render is lm-eval's doc_to_text for a question.
func Render(q Question) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(q.Text))
	for i, c := range q.Choices {
		b.WriteString("\n" + Letters[i] + ". " + c)
	}
	b.WriteString("\nAnswer:")
	return b.String()
}

// Prompt renders question q of subject with the given few-shot examples.
func Prompt(subject string, shots []Question, q Question) string {
	var b strings.Builder
	b.WriteString(Description(subject))
	for _, s := range shots {
		b.WriteString(Render(s) + " " + s.Answer + "\n\n")
	}
	b.WriteString(Render(q))
	return b.String()
}

// Docs renders a subject's test split for a method (task.Generate, task.Logprobs or
// task.Loglikelihood): the questions pick chooses from the split's size (nil: all),
// each with the first numFewshot dev examples.
func Docs(dataDir, subject, method string, numFewshot int, pick task.Picker) ([]task.Doc, error) {
	test, err := Load(dataDir, subject, "test")
	if err != nil {
		return nil, err
	}
	var shots []Question
	if numFewshot > 0 {
		dev, err := Load(dataDir, subject, "dev")
		if err != nil {
			return nil, err
		}
		if numFewshot > len(dev) {
			return nil, fmt.Errorf("mmlu: %s: num_fewshot %d is more than the %d dev examples", subject, numFewshot, len(dev))
		}
		shots = dev[:numFewshot]
	}
	idx := pick.Indices(len(test))
	docs := make([]task.Doc, len(idx))
	for n, i := range idx {
		q := test[i]
		target := q.Answer
		d := task.Doc{Task: "mmlu_" + subject, Group: "mmlu", Index: i, Prompt: Prompt(subject, shots, q), Target: target}
		switch method {
		case "", task.Generate:
			d.Method, d.Metric, d.Stop, d.MaxTokens = task.Generate, "exact_match", []string{"\n", "</s>"}, 32
			d.Score = func(resp string) []task.Filtered {
				ext := Extract(resp)
				return []task.Filtered{{Filter: "none", Extracted: ext, Correct: Correct(ext, target)}}
			}
		case task.Logprobs, task.Loglikelihood:
			d.Method, d.Metric, d.Choices = method, "acc", []string{" A", " B", " C", " D"}
			d.ScoreChoices = func(lp []float64) []task.Filtered {
				i := task.Argmax(lp)
				if i < 0 {
					return []task.Filtered{{Filter: "none", Extracted: Invalid}}
				}
				return []task.Filtered{{Filter: "none", Extracted: Letters[i], Correct: Letters[i] == target}}
			}
		default:
			return nil, fmt.Errorf("mmlu: unknown method %q (generate, logprobs, loglikelihood)", method)
		}
		docs[n] = d
	}
	return docs, nil
}

// Extract is the answer in a response: its first line, as generation stops at "\n".
func Extract(response string) string { return task.FirstLine(response) }

// Correct is exact_match with ignore_case and ignore_punctuation.
func Correct(extracted, target string) bool { return task.ExactMatch(extracted, target) }

// Config is lm-eval's config of a subject's task, asked by method: its generative MMLU
// (exact_match of the letter) or its multiple-choice MMLU (acc).
func Config(subject, method string, numFewshot int) task.Config {
	c := task.Config{Task: "mmlu_" + subject, Tag: "mmlu", DatasetPath: "hails/mmlu_no_train", DatasetName: subject,
		TestSplit: "test", FewshotSplit: "dev", NumFewshot: numFewshot, Metadata: task.Metadata{Version: 1.0},
		MetricList: []task.MetricConfig{task.Mean("acc")}}
	if method == "" || method == task.Generate {
		em := task.Mean("exact_match")
		em.IgnoreCase, em.IgnorePunctuation = true, true
		c.MetricList, c.Metadata.Version = []task.MetricConfig{em}, 3.0
	}
	return c
}
