package schema_test

import (
	"errors"
	"os"
	"strings"
	"testing"

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
		"unknown_field.yaml":   {"doc_to_txt"},
		"python_function.yaml": {"doc_to_text", "utils.doc_to_text", "filter_list[0].filter[0].function", "utils.MyFilter", "filter_list[0].filter[1].function", "majority_vote", "metric_list[0].metric", "bleu_max"},
		"broken.yaml":          {"output_type", "loglikelihood_rolling", "doc_to_text", "filter_list[0].filter[0].regex_pattern", "(unclosed"},
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
