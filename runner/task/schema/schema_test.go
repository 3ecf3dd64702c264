package schema_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/evalflow/evalflow/runner/task/schema"
	evalflow "github.com/evalflow/evalflow/shared"
)

var data = os.DirFS("testdata")

// A task file in lm-eval's schema reads with its include merged under it (its own
// fields winning), its templates, few-shot samples, filters and metrics as written.
func TestATaskReadsWithItsIncludeMergedUnderIt(t *testing.T) {
	task, err := schema.Load(data, "arith_sums.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	switch {
	case task.Task != "arith_sums" || task.DatasetPath != "arith" || task.TestSplit != "test" || task.OutputType != "generate_until":
		t.Errorf("task %+v", task)
	case task.NumFewshot == nil || *task.NumFewshot != 2: // its own, over the include's 0
		t.Errorf("num_fewshot %v; want the task's own 2", task.NumFewshot)
	case task.DocToText.Text != "Q: {{a}} + {{b}} =\nA:" || task.DocToTarget.Text != "{{answer}}":
		t.Errorf("templates %q %q", task.DocToText.Text, task.DocToTarget.Text)
	case task.Description != "Add the numbers.\n\n" || len(task.Tag) != 1 || task.Tag[0] != "arith":
		t.Errorf("description %q, tag %v", task.Description, task.Tag)
	case task.FewshotConfig == nil || task.FewshotConfig.Sampler != "first_n" || len(task.FewshotConfig.Samples) != 2:
		t.Errorf("fewshot_config %+v", task.FewshotConfig)
	case len(task.MetricList) != 1 || !task.MetricList[0].IgnoreCase || len(task.MetricList[0].RegexesToIgnore) != 2:
		t.Errorf("metric_list %+v", task.MetricList)
	case len(task.FilterList) != 1 || task.FilterList[0].Filter[0].RegexPattern != "(?<=the answer is )(-?\\d+)":
		t.Errorf("filter_list %+v", task.FilterList)
	}
}

// What evalflow cannot run as lm-eval runs it is refused before anything is asked,
// naming the field and the feature.
func TestWhatCannotRunIsRefusedNamingFieldAndFeature(t *testing.T) {
	for file, want := range map[string][]string{
		"unknown_field.yaml":    {"doc_to_txt"},
		"python_function.yaml":  {"doc_to_text", "utils.doc_to_text", "filter_list[0].filter[0].function", "utils.MyFilter", "filter_list[0].filter[1].function", "majority_vote", "metric_list[0].metric", "bleu_max"},
		"broken.yaml":           {"output_type", "loglikelihood_rolling", "doc_to_text", "filter_list[0].filter[0].regex_pattern", "(unclosed"},
		"repeats.yaml":          {"repeats", "only tasks scored by utils.pass_at_k"},
		"pass_at_k_beyond.yaml": {"metric_list[0].k", "k 8", "repeats (4)"},
	} {
		task, err := schema.Load(data, file)
		if err == nil {
			err = task.Check()
		}
		if err == nil {
			t.Errorf("%s: no error", file)
			continue
		}
		var e *evalflow.Error
		if !errors.As(err, &e) || e.Code != evalflow.CodeInvalid {
			t.Errorf("%s: %v is not an invalid-input error", file, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to name %q", file, err, w)
			}
		}
	}
	if _, err := schema.Load(data, "cycle_a.yaml"); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("an include cycle: %v", err)
	}
	if _, err := schema.Load(data, "absent.yaml"); err == nil {
		t.Error("a missing file: no error")
	}
}

// A generate_until task renders as lm-eval renders it: the description, each example's
// question, " ", answer and "\n\n", then the document's question; as chat, the
// description a system turn and each example a user and an assistant turn. Its filters
// and exact_match (with the metric's options) score a response.
func TestAGenerateTaskRendersAndScoresAsLMEval(t *testing.T) {
	task, err := schema.Load(data, "arith_sums.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rows := []map[string]any{{"a": 5, "b": 7, "answer": "12"}, {"a": 1, "b": 1, "answer": "2"}}
	docs, err := task.Docs(rows, nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "Add the numbers.\n\nQ: 1 + 2 =\nA: 3\n\nQ: 2 + 2 =\nA: 4\n\nQ: 5 + 7 =\nA:"
	if len(docs) != 2 || docs[0].Prompt != want {
		t.Fatalf("prompt %q;\nwant %q", docs[0].Prompt, want)
	}
	if m := docs[0].Messages; len(m) != 6 || m[0].Role != "system" || m[0].Content != "Add the numbers.\n\n" ||
		m[1].Content != "Q: 1 + 2 =\nA:" || m[2].Role != "assistant" || m[2].Content != "3" || m[5].Content != "Q: 5 + 7 =\nA:" {
		t.Errorf("messages %+v", m)
	}
	if d := docs[0]; d.Target != "12" || d.Task != "arith_sums" || len(d.Stop) != 2 || d.Stop[0] != "Q:" || d.MaxTokens != 256 {
		t.Errorf("doc %+v", d)
	}
	for resp, correct := range map[string]bool{"so the answer is 12.": true, "the answer is 1,2": false, "12": false} {
		got := docs[0].Score(resp)
		if len(got) != 1 || got[0].Filter != "strict-match" || got[0].Correct != correct {
			t.Errorf("score of %q: %+v; want correct %v", resp, got, correct)
		}
	}
}

// lm-eval's default sampler: Random(1234).sample, one draw a document in order; from
// the scored split itself, the document is left out of its own examples. The draws
// are CPython's: sample(range(10), 2) twice gives [7, 1] then [0, 1].
func TestTheDefaultSamplerDrawsAsLMEval(t *testing.T) {
	task, err := schema.Load(data, "arith_sums.yaml")
	if err != nil {
		t.Fatal(err)
	}
	task.FewshotConfig = nil // the default sampler, from the pool
	pool := make([]map[string]any, 10)
	for i := range pool {
		pool[i] = map[string]any{"a": i, "b": 0, "answer": fmt.Sprint(i)}
	}
	rows := []map[string]any{{"a": 9, "b": 9, "answer": "18"}, {"a": 8, "b": 8, "answer": "16"}}
	docs, err := task.Docs(rows, pool, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][2]int{{7, 1}, {0, 1}} {
		prefix := fmt.Sprintf("Add the numbers.\n\nQ: %d + 0 =\nA: %d\n\nQ: %d + 0 =\nA: %d\n\n", want[0], want[0], want[1], want[1])
		if !strings.HasPrefix(docs[i].Prompt, prefix) {
			t.Errorf("document %d: %q; want examples %v", i, docs[i].Prompt, want)
		}
	}
	// Only the second scored: its examples are still the second draw.
	alone, _ := task.Docs(rows, pool, false, []int{1})
	if alone[0].Prompt != docs[1].Prompt {
		t.Errorf("document 1 scored alone: %q; want %q", alone[0].Prompt, docs[1].Prompt)
	}
	// From the scored split: n+1 are drawn and the document left out. CPython's
	// second sample(range(10), 3) is [1, 0, 9]: document 1's examples are [0, 9].
	same, _ := task.Docs(pool, pool, true, []int{1})
	if !strings.HasPrefix(same[0].Prompt, "Add the numbers.\n\nQ: 0 + 0 =\nA: 0\n\nQ: 9 + 0 =\nA: 9\n\n") {
		t.Errorf("from its own split: %q", same[0].Prompt)
	}
}

// A multiple_choice task asks one log-likelihood a choice (the target delimiter and the
// choice, after the context); acc takes the likeliest choice, acc_norm the likeliest
// per character, as lm-eval's process_results does; choices rendered by a template
// are read as the Python list it renders.
func TestAMultipleChoiceTaskAsksAndScoresAsLMEval(t *testing.T) {
	task, err := schema.Load(data, "mc_first.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Check(); err != nil {
		t.Fatal(err)
	}
	rows := []map[string]any{{"question": "Which is right?", "targets": map[string]any{"choices": []any{"It's yes", "No", "a much longer wrong answer"}}}}
	docs, err := task.Docs(rows, nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := docs[0]
	if d.Prompt != "Q: Which is right?\nA:" || d.Method != "loglikelihood" || d.Target != "It's yes" ||
		len(d.Choices) != 3 || d.Choices[0] != " It's yes" || d.Choices[2] != " a much longer wrong answer" {
		t.Fatalf("doc %+v", d)
	}
	got := d.ScoreChoices([]float64{-10, -9, -20})
	if got[0].Correct || got[0].Extracted != "No" || got[1].Correct || got[1].Extracted != "a much longer wrong answer" {
		t.Errorf("lls -10 -9 -20: %+v; want acc picking No, acc_norm the long answer (-20/26 chars)", got)
	}
	got = d.ScoreChoices([]float64{-1, -5, -30}) // per character: -0.125, -2.5, -1.15
	if len(got) != 2 || got[0].Metric != "acc" || got[1].Metric != "acc_norm" || !got[0].Correct || !got[1].Correct {
		t.Errorf("lls -1 -5 -30: %+v; want acc and acc_norm, both right", got)
	}
}

// exact_match's options apply as lm-eval's: regexes to ignore, then case, then
// punctuation, then digits, to the answer and the target both.
func TestExactMatchTakesEachOfLMEvalsOptions(t *testing.T) {
	for _, c := range []struct {
		options string
		resp    string
		correct bool
	}{
		{"ignore_numbers: true", "Paris!2024", true},
		{"ignore_numbers: true", "paris!", false},
		{"ignore_numbers: true\n    ignore_case: true", "paris!", true},
		{"ignore_punctuation: true", "Paris!1", true},
		{"ignore_punctuation: true", "Paris", false},
		{"regexes_to_ignore: ['\\d']\n    ignore_case: true", "PARIS!", true},
		{"ignore_case: true", "Paris!1", true},
	} {
		file := "task: t\ndataset_path: x\ntest_split: test\noutput_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n" +
			"metric_list:\n  - metric: exact_match\n    " + c.options + "\n"
		task, err := schema.Load(fstest.MapFS{"t.yaml": {Data: []byte(file)}}, "t.yaml")
		if err == nil {
			err = task.Check()
		}
		if err != nil {
			t.Fatal(err)
		}
		docs, err := task.Docs([]map[string]any{{"q": "Capital of France?", "a": "Paris!1"}}, nil, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := docs[0].Score(c.resp); got[0].Correct != c.correct {
			t.Errorf("%s: %q scored %v; want %v", c.options, c.resp, got[0].Correct, c.correct)
		}
	}
}
