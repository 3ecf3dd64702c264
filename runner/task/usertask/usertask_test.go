package usertask_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/runner/task/usertask"
	evalflow "github.com/evalflow/evalflow/shared"
)

const valid = "task: %s\ndataset_path: json\ndataset_kwargs:\n  data_files: q.jsonl\noutput_type: generate_until\n" +
	"test_split: train\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"

func task(name string) evalflow.DatasetSpec {
	return evalflow.DatasetSpec{Name: "custom", TaskYAML: strings.Replace(valid, "%s", name, 1)}
}

// Two datasets' tasks may not share a name (their results would); an inline task
// file cannot include another.
func TestEachTaskIsItsOwnAndAnInlineOneIncludesNothing(t *testing.T) {
	err := usertask.Check("", []evalflow.DatasetSpec{task("mine"), {Name: "custom", Task: "other"}, task("mine")})
	var e *evalflow.Error
	if !errors.As(err, &e) || e.Field != "datasets[2].task_yaml.task" {
		t.Errorf("the same name twice: %v", err)
	}
	if err := usertask.Check("", []evalflow.DatasetSpec{task("other"), {Name: "custom", Task: "other", Samples: []evalflow.CustomSample{{Prompt: "p", Target: "t"}}}}); err == nil {
		t.Error("a task file named as a custom dataset's task: no error")
	}
	if err := usertask.Check("", []evalflow.DatasetSpec{task("a"), task("b")}); err != nil {
		t.Errorf("two tasks of their own: %v", err)
	}
	inc := task("c")
	inc.TaskYAML = "include: base.yaml\n" + inc.TaskYAML
	if err := usertask.Check("", []evalflow.DatasetSpec{inc}); !errors.As(err, &e) || e.Field != "datasets[0].task_yaml.include" {
		t.Errorf("an inline include: %v", err)
	}
}
