package evalflow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Datasets: what a run evaluates, and how many samples that is.

// DatasetSpec names a benchmark and how much of it to run. In JSON it is an object,
// or just the dataset's name as a string.
type DatasetSpec struct {
	Name string `json:"name"`
	// Limit caps the samples taken from each task (each MMLU subject is a task): a
	// count (>= 1) or a fraction (< 1, rounded up), as lm-eval's --limit; 0 is all.
	Limit float64 `json:"limit,omitempty"`
	// Seed, when set, draws the limited samples at random by this seed instead of
	// taking the first ones.
	Seed *int `json:"seed,omitempty"`
	// Subjects restricts a group to its tasks of these subjects (their dataset_name:
	// MMLU's subjects, BBH's tasks); empty is all of them.
	Subjects []string `json:"subjects,omitempty"`
	// NumFewshot is the number of few-shot examples; nil is the task's default.
	NumFewshot *int `json:"num_fewshot,omitempty"`
	// Variant picked a form of evalflow's own gsm8k and truthfulqa, before lm-eval's
	// tasks took those names: now refused, naming what replaced it.
	Variant string `json:"variant,omitempty"`
	// MaxTokens bounds each generated answer (0: the task's default).
	MaxTokens int `json:"max_tokens,omitempty"`
	// Samples are a custom dataset's samples, inline (name "custom").
	Samples []CustomSample `json:"samples,omitempty"`
	// Path is a custom dataset's JSONL file, relative to the runner's data directory
	// (custom/ under it), as an alternative to Samples.
	Path string `json:"path,omitempty"`
	// Task names a custom dataset's task in the results (default "custom").
	Task string `json:"task,omitempty"`
	// TaskYAML is a custom dataset's task file in lm-eval's schema, inline: its
	// documents from data files under the data directory's custom/ (dataset_path json,
	// csv or parquet, dataset_kwargs.data_files). TaskFile is such a file under custom/.
	TaskYAML string `json:"task_yaml,omitempty"`
	TaskFile string `json:"task_file,omitempty"`
	// Method is how a custom dataset's answers are scored: "generate" (default),
	// "logprobs" (next-token top_logprobs on chat completions) or "loglikelihood"
	// (completions with echo + logprobs).
	Method string `json:"method,omitempty"`
}

// UnmarshalJSON accepts "mmlu" as well as {"name":"mmlu",...}.
func (d *DatasetSpec) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &d.Name)
	}
	type plain DatasetSpec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode((*plain)(d))
}

// Dataset describes a benchmark evalflow can run.
type Dataset struct {
	Name string `json:"name"`
	// Samples is the size of the scored split, for estimates.
	Samples int `json:"samples,omitempty"`
	// Methods are the ways it can be scored; the first is the default.
	Methods []string `json:"methods,omitempty"`
}

// Datasets are the benchmarks the runner scores.
var Datasets = map[string]Dataset{
	"custom": {Name: "custom", Methods: []string{"generate", "logprobs", "loglikelihood"}},
}

// DatasetNames lists the known datasets, sorted.
func DatasetNames() []string {
	names := make([]string, 0, len(Datasets))
	for n := range Datasets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var taskNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

func (d *DatasetSpec) validate(field string) error {
	ds, ok := Datasets[d.Name]
	shipped, isShipped := LookupTask(d.Name)
	if !ok && !isShipped {
		return Invalidf(field+".name", "unknown dataset %q (known: %s)", clip(d.Name), knownNames())
	}
	if d.Limit < 0 || d.Limit > MaxLimit || (d.Limit > 1 && d.Limit != math.Trunc(d.Limit)) {
		return Invalidf(field+".limit", "must be a whole count up to %d, or a fraction below 1", MaxLimit)
	}
	if d.MaxTokens < 0 || d.MaxTokens > 32768 {
		return Invalidf(field+".max_tokens", "must be between 1 and 32768")
	}
	if d.NumFewshot != nil && (*d.NumFewshot < 0 || *d.NumFewshot > 25) {
		return Invalidf(field+".num_fewshot", "must be between 0 and 25")
	}
	if isShipped {
		return d.validateShipped(field, shipped)
	}
	if err := d.validateCustom(field); err != nil {
		return err
	}
	if d.Variant != "" {
		return Invalidf(field+".variant", "%s has no variants", d.Name)
	}
	if err := oneOf(field+".method", d.Name, "method", d.Method, ds.Methods); err != nil {
		return err
	}
	if len(d.Subjects) > 0 {
		return Invalidf(field+".subjects", "%s has no subjects: they pick a shipped group's tasks", d.Name)
	}
	return nil
}

// validateShipped refuses what a shipped task does not take: its task file says how
// it is asked and scored.
func (d *DatasetSpec) validateShipped(field string, t ShippedTask) error {
	for _, f := range []struct {
		name, value string
		set         bool
	}{{"variant", d.Variant, d.Variant != ""}, {"method", d.Method, d.Method != ""}, {"samples", "", len(d.Samples) > 0},
		{"path", "", d.Path != ""}, {"task", "", d.Task != ""}, {"task_yaml", "", d.TaskYAML != ""}, {"task_file", "", d.TaskFile != ""}} {
		if moved, ok := movedOptions[d.Name][f.name+"="+f.value]; ok && f.set {
			return Invalidf(field+"."+f.name, "%s's %s %q is now %s", d.Name, f.name, f.value, moved)
		}
		if f.set {
			return Invalidf(field+"."+f.name, "%s is lm-eval's task %s: its task file says how it is asked (GET /tasks); %s is for evalflow's own datasets", d.Name, t.Name, f.name)
		}
	}
	if len(d.Subjects) > 0 && len(t.Subjects) == 0 {
		return Invalidf(field+".subjects", "%s has no subjects: they pick a group's tasks", d.Name)
	}
	for j, s := range d.Subjects {
		if _, ok := t.Subjects[s]; !ok {
			return Invalidf(fmt.Sprintf("%s.subjects[%d]", field, j), "%s has no subject %q (its tasks' dataset names: GET /tasks)", d.Name, clip(s))
		}
		if slices.Contains(d.Subjects[:j], s) {
			return Invalidf(fmt.Sprintf("%s.subjects[%d]", field, j), "%q is listed twice", s)
		}
	}
	if d.NumFewshot != nil && *d.NumFewshot > t.MaxFewshot {
		return Invalidf(field+".num_fewshot", "%s has %d few-shot examples to draw from, not %d", d.Name, t.MaxFewshot, *d.NumFewshot)
	}
	return nil
}

// movedOptions are what evalflow's own datasets' options ("field=value") became when
// lm-eval's task of the same name took the name.
var movedOptions = map[string]map[string]string{
	"gsm8k": {
		"variant=fewshot":  `the task gsm8k itself (5-shot by default): drop "variant"`,
		"variant=cot":      `the task gsm8k_cot: {"name": "gsm8k_cot"}`,
		"variant=zeroshot": `gsm8k with no examples: {"name": "gsm8k", "num_fewshot": 0}`,
	},
	"truthfulqa": {
		"variant=mc":           `lm-eval's two multiple-choice tasks: ["truthfulqa_mc1", "truthfulqa_mc2"] (truthfulqa alone is lm-eval's tag: those and truthfulqa_gen)`,
		"variant=mc1":          `the task truthfulqa_mc1 (lm-eval's, from mc_task.json; evalflow's shuffled the CSV's answers)`,
		"variant=mc2":          `the task truthfulqa_mc2 (lm-eval's, from mc_task.json)`,
		"variant=gen":          `the task truthfulqa_gen`,
		"method=loglikelihood": `how lm-eval's truthfulqa_mc1 and _mc2 are asked: drop "method"`,
		"method=generate":      `the task truthfulqa_gen`,
	},
	"mmlu": {
		"method=generate":      `the group mmlu_generative (0-shot as lm-eval's; evalflow's mmlu was 5-shot): {"name": "mmlu_generative", "num_fewshot": 5}`,
		"method=loglikelihood": `lm-eval's mmlu itself, each choice's log-likelihood through /v1/completions: drop "method"`,
		"method=logprobs":      `not lm-eval's: its mmlu asks each choice's log-likelihood through /v1/completions (drop "method"); an endpoint with chat only can run mmlu_generative`,
	},
}

// knownNames lists what a dataset's name may be: evalflow's own datasets, and each
// shipped task, group and tag that is not within a group (their tasks are names too).
func knownNames() string {
	within := map[string]bool{}
	for _, t := range shippedTasks {
		if t.Group {
			for _, m := range t.Tasks {
				within[m] = true
			}
			for _, m := range t.Subjects {
				within[m] = true
			}
		}
	}
	var top []string
	for _, t := range shippedTasks {
		if !within[t.Name] {
			top = append(top, t.Name)
		}
	}
	return strings.Join(DatasetNames(), ", ") + "; or lm-eval's name of a task, group or tag evalflow ships: " +
		strings.Join(top, ", ") + " and each of their tasks, as bbh_zeroshot_snarks (GET /tasks lists them)"
}

// oneOf checks an optional choice against a dataset's list.
func oneOf(field, dataset, what, v string, known []string) error {
	switch {
	case v == "" || slices.Contains(known, v):
		return nil
	case len(known) == 0:
		return Invalidf(field, "%s has no %ss", dataset, what)
	}
	return Invalidf(field, "unknown %s %s %q (known: %s)", dataset, what, clip(v), strings.Join(known, ", "))
}

// MaxLimit bounds a dataset's limit: more than any split holds, far from overflowing.
const MaxLimit = 1_000_000

// SampleCount estimates how many samples the spec selects.
func (d DatasetSpec) SampleCount() int {
	if d.Name == "custom" {
		n := len(d.Samples)
		if d.Path != "" || d.TaskYAML != "" || d.TaskFile != "" {
			n = 100 // unknown until the runner reads the file
		}
		return LimitCount(n, d.Limit)
	}
	if t, ok := LookupTask(d.Name); ok {
		return t.SampleCount(d.Limit, d.Subjects...)
	}
	return LimitCount(Datasets[d.Name].Samples, d.Limit)
}

// LimitCount is how many of n samples a limit keeps (see DatasetSpec.Limit).
func LimitCount(n int, limit float64) int {
	switch {
	case limit >= 1:
		return min(n, int(limit))
	case limit > 0:
		return min(n, int(math.Ceil(limit*float64(n))))
	}
	return n
}
