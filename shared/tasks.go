package evalflow

import (
	"slices"
	"strings"
)

// ShippedTask is a task or group the runner ships as a task file in lm-eval's schema
// (runner/task/tasks), by lm-eval's name: what a run may name, and what GET /tasks
// shows. The table (shipped_tasks.go) is written with the files by go generate, and
// runner/task/tasks's tests hold it to them.
type ShippedTask struct {
	Name       string   `json:"name"`
	Group      bool     `json:"group,omitempty"`
	Tag        bool     `json:"tag,omitempty"`   // lm-eval's tag: its tasks, each scored alone
	Tasks      []string `json:"tasks,omitempty"` // a group's or tag's tasks
	OutputType string   `json:"output_type"`
	NumFewshot int      `json:"num_fewshot"`
	MaxFewshot int      `json:"max_fewshot"` // the most examples num_fewshot may ask (a group: its tasks' least)
	Metrics    []string `json:"metrics"`     // "metric,filter", as results.json keys them
	Samples    int      `json:"samples"`     // the scored split's documents (a group: its tasks')
	Source     string   `json:"source"`      // the data files under ../shared/datasets
	// Subjects are a group's tasks, however deep, by their dataset_name (MMLU's
	// subjects, BBH's tasks): what a run's subjects may pick.
	Subjects map[string]string `json:"subjects,omitempty"`
	// RunsCode says its score runs the model's code (HumanEval): in a sandbox.
	RunsCode bool `json:"runs_code,omitempty"`
}

// PassAtKFunction is the metric function of a task whose score runs the model's code
// (lm-eval's utils.pass_at_k).
const PassAtKFunction = "utils.pass_at_k"

// RunsCode says whether the dataset's score runs the model's code, so that its job
// needs a sandbox: a shipped task (or a group of them) that does, or a task file
// brought inline that names PassAtKFunction. A task_file's is known only to the
// runner, which reads it.
func (d DatasetSpec) RunsCode() bool {
	if d.TaskYAML != "" {
		return strings.Contains(d.TaskYAML, PassAtKFunction)
	}
	t, ok := LookupTask(d.Name)
	if !ok {
		return false
	}
	for _, m := range t.Tasks {
		if mt, ok := LookupTask(m); ok && mt.RunsCode {
			return true
		}
	}
	return t.RunsCode
}

// LookupTask is the shipped task or group of that name.
func LookupTask(name string) (ShippedTask, bool) {
	i, ok := slices.BinarySearchFunc(shippedTasks, name, func(t ShippedTask, n string) int { return strings.Compare(t.Name, n) })
	if !ok {
		return ShippedTask{}, false
	}
	return shippedTasks[i], true
}

// ShippedTasks are every shipped task and group, by name.
func ShippedTasks() []ShippedTask { return slices.Clone(shippedTasks) }

// SampleCount is how many documents a limit keeps of the task (each of a group's tasks
// limited apart), or of the group's tasks of those subjects.
func (t ShippedTask) SampleCount(limit float64, subjects ...string) int {
	if !t.Group && !t.Tag {
		return LimitCount(t.Samples, limit)
	}
	n := 0
	if len(subjects) > 0 {
		for _, s := range subjects {
			if mt, ok := LookupTask(t.Subjects[s]); ok {
				n += mt.SampleCount(limit)
			}
		}
		return n
	}
	for _, m := range t.Tasks {
		if mt, ok := LookupTask(m); ok {
			n += mt.SampleCount(limit)
		}
	}
	return n
}

// Catalogue is what a run may evaluate (GET /tasks): evalflow's own datasets, and
// every task and group it ships in lm-eval's schema.
type Catalogue struct {
	Datasets []Dataset     `json:"datasets"`
	Tasks    []ShippedTask `json:"tasks"`
}

// TaskCatalogue is the catalogue, each list by name.
func TaskCatalogue() Catalogue {
	c := Catalogue{Tasks: ShippedTasks()}
	for _, n := range DatasetNames() {
		c.Datasets = append(c.Datasets, Datasets[n])
	}
	return c
}
