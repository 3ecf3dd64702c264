// Package source reads a task's documents from the runner's data directory: the
// datasets lm-eval's tasks name on the Hugging Face hub (dataset_path, dataset_name)
// of which evalflow keeps a copy (../shared/datasets, DATA.md), split by split.
package source

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/evalflow/evalflow/runner/task/schema"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Rows are a task's documents: the split it scores, and the pool its few-shot
// examples are drawn from (the same split's rows when SameSplit).
type Rows struct {
	Split     string
	Scored    []map[string]any
	Pool      []map[string]any
	SameSplit bool
}

// A reader gives one split of one of a hub dataset's configurations.
type reader func(dataDir, name, split string) ([]map[string]any, error)

// A dataset is a hub dataset evalflow has a copy of: how to read it, and the file a
// configuration is in (under the data directory).
type dataset struct {
	read reader
	file func(name string) string
}

var (
	bbhCopy        = dataset{bbh, func(name string) string { return "bbh/" + name + ".json" }}
	truthfulQACopy = dataset{truthfulQA, func(name string) string {
		if name == "generation" {
			return "truthfulqa/TruthfulQA.csv"
		}
		return "truthfulqa/mc_task.json"
	}}
	mmluCopy = dataset{mmlu, func(name string) string { return "mmlu/test/" + name + "_test.csv" }}
	// The copies kept as one JSON Lines file a split: their configurations' names, and
	// the scored split's file first.
	winograndeCopy = jsonLinesCopy("WinoGrande (its train split is not obtainable)", []string{"winogrande_xl"},
		splitFile{"validation", "winogrande/dev.jsonl"})
	lambadaCopy = jsonLinesCopy("LAMBADA (OpenAI's)", []string{"default", "en"}, splitFile{"test", "lambada/lambada_test.jsonl"})
	gsm8kCopy   = jsonLinesCopy("GSM8K", []string{"main"}, splitFile{"test", "gsm8k/test.jsonl"}, splitFile{"train", "gsm8k/train.jsonl"})
	ifevalCopy  = jsonLinesCopy("IFEval", []string{"", "default"}, splitFile{"train", "ifeval/input_data.jsonl"})
	// HumanEval's 164 problems as openai/human-eval released them.
	humanevalCopy = jsonLinesCopy("HumanEval", []string{"", "openai_humaneval"}, splitFile{"test", "humaneval/HumanEval.jsonl"})
)

// splitFile is one split of a hub dataset and its file under the data directory.
type splitFile struct{ name, file string }

// jsonLinesCopy is a hub dataset kept as a JSON Lines file a split, under any of its
// configurations' names; what names another split or configuration is an error
// saying what is here.
func jsonLinesCopy(what string, names []string, splits ...splitFile) dataset {
	read := func(dataDir, name, want string) ([]map[string]any, error) {
		i := slices.IndexFunc(splits, func(s splitFile) bool { return s.name == want })
		if i < 0 || !slices.Contains(names, name) {
			var have []string
			for _, s := range splits {
				have = append(have, s.name)
			}
			return nil, evalflow.Invalidf("dataset_name", "%s has its %s split of %q here, not %s/%s",
				what, strings.Join(have, " and "), names[len(names)-1], name, want)
		}
		return JSONLines[map[string]any](filepath.Join(dataDir, filepath.FromSlash(splits[i].file)), false)
	}
	return dataset{read, func(string) string { return splits[0].file }}
}

// hub are the hub datasets evalflow has, by lm-eval's dataset_path.
var hub = map[string]dataset{
	"SaylorTwift/bbh":           bbhCopy, // lm-eval's BBH today
	"lukaemon/bbh":              bbhCopy, // and before
	"truthfulqa/truthful_qa":    truthfulQACopy,
	"truthful_qa":               truthfulQACopy,
	"allenai/winogrande":        winograndeCopy,
	"winogrande":                winograndeCopy,
	"EleutherAI/lambada_openai": lambadaCopy,
	"openai/gsm8k":              gsm8kCopy, // lm-eval's GSM8K today
	"gsm8k":                     gsm8kCopy, // and before
	"cais/mmlu":                 mmluCopy,
	"google/IFEval":             ifevalCopy,
	"openai/openai_humaneval":   humanevalCopy,
	"openai_humaneval":          humanevalCopy,
}

// File is the file under the data directory a task's documents are read from ("" for
// a dataset evalflow has no copy of).
func File(t *schema.Task) string {
	c, err := copyOf(t)
	if err != nil {
		return ""
	}
	return c.file(t.DatasetName)
}

// Check says whether evalflow can read the task's documents: a hub dataset it has a
// copy of, or its own data files named as they may be.
func Check(t *schema.Task) error {
	_, err := copyOf(t)
	return err
}

// copyOf is where a task's documents come from: evalflow's copy of the hub dataset it
// names, or its own data files.
func copyOf(t *schema.Task) (dataset, error) {
	if c, ok := hub[t.DatasetPath]; ok {
		return c, nil
	}
	if _, ok := localFormats[t.DatasetPath]; ok {
		return localCopy(t)
	}
	return dataset{}, evalflow.Invalidf("dataset_path", "task %s: evalflow has no copy of dataset %q (it has %s; or a task's own files: %s)",
		t.Task, t.DatasetPath, strings.Join(slices.Sorted(maps.Keys(hub)), ", "), strings.Join(LocalFormats(), ", "))
}

// Read reads the task's scored split (test_split, else validation_split) and its
// few-shot pool as lm-eval picks it: fewshot_split, else the config's inline samples
// (left to the task), else training_split, validation_split, test_split.
func Read(dataDir string, t *schema.Task) (Rows, error) {
	c, err := copyOf(t)
	if err != nil {
		return Rows{}, err
	}
	splits := map[string][]map[string]any{}
	get := func(split string) ([]map[string]any, error) {
		if rows, ok := splits[split]; ok {
			return rows, nil
		}
		rows, err := c.read(dataDir, t.DatasetName, split)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", t.Task, err)
		}
		splits[split] = rows
		return rows, nil
	}
	r := Rows{Split: cmp.Or(t.TestSplit, t.ValidationSplit)}
	if r.Split == "" {
		return Rows{}, evalflow.Invalidf("test_split", "task %s names no test_split or validation_split", t.Task)
	}
	if r.Scored, err = get(r.Split); err != nil {
		return Rows{}, err
	}
	if t.FewshotConfig != nil && len(t.FewshotConfig.Samples) > 0 && t.FewshotSplit == "" {
		return r, nil
	}
	pool := cmp.Or(t.FewshotSplit, t.TrainingSplit, t.ValidationSplit, t.TestSplit)
	if t.NumFewshot == nil || *t.NumFewshot == 0 {
		return r, nil
	}
	if r.Pool, err = get(pool); err != nil {
		return Rows{}, err
	}
	r.SameSplit = pool == r.Split
	return r, nil
}

// configName is what a dataset_name may be: a name, never a path.
var configName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// bbh reads BIG-Bench Hard: one task a configuration, its test split the examples of
// bbh/<name>.json.
func bbh(dataDir, name, split string) ([]map[string]any, error) {
	if !configName.MatchString(name) || strings.Contains(name, "..") {
		return nil, evalflow.Invalidf("dataset_name", "%q is not a BBH task", name)
	}
	if split != "test" {
		return nil, evalflow.Invalidf("test_split", "BBH has a test split only, not %q", split)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "bbh", name+".json"))
	if err != nil {
		return nil, fmt.Errorf("read BBH task %s: %w", name, err)
	}
	var file struct {
		Examples []map[string]any `json:"examples"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		return nil, fmt.Errorf("read BBH task %s: %w", name, err)
	}
	return file.Examples, nil
}

// truthfulQA reads TruthfulQA's multiple_choice configuration: its validation split,
// as the hub's truthful_qa builds it from mc_task.json — each target dict's answers
// in their written order as choices, their 0/1 as labels.
func truthfulQA(dataDir, name, split string) ([]map[string]any, error) {
	if name == "generation" && split == "validation" {
		return truthfulQAGeneration(dataDir)
	}
	if name != "multiple_choice" || split != "validation" {
		return nil, evalflow.Invalidf("dataset_name", "TruthfulQA has the multiple_choice configuration's validation split here, not %s/%s", name, split)
	}
	f, err := os.Open(filepath.Join(dataDir, "truthfulqa", "mc_task.json"))
	if err != nil {
		return nil, fmt.Errorf("read TruthfulQA: %w", err)
	}
	defer f.Close()
	var raw []map[string]json.RawMessage
	if err := json.NewDecoder(f).Decode(&raw); err != nil {
		return nil, fmt.Errorf("read TruthfulQA: %w", err)
	}
	rows := make([]map[string]any, len(raw))
	for i, r := range raw {
		var q string
		if err := json.Unmarshal(r["question"], &q); err != nil {
			return nil, fmt.Errorf("read TruthfulQA: question %d: %w", i, err)
		}
		row := map[string]any{"question": q}
		for _, field := range []string{"mc1_targets", "mc2_targets"} {
			choices, labels, err := orderedTargets(r[field])
			if err != nil {
				return nil, fmt.Errorf("read TruthfulQA: question %d: %s: %w", i, field, err)
			}
			row[field] = map[string]any{"choices": choices, "labels": labels}
		}
		rows[i] = row
	}
	return rows, nil
}

// truthfulQAGeneration reads TruthfulQA's generation configuration from the CSV
// release, as the hub's truthful_qa builds it: each question with its best, correct
// and incorrect answers (";"-separated in the CSV).
func truthfulQAGeneration(dataDir string) ([]map[string]any, error) {
	path := filepath.Join(dataDir, "truthfulqa", "TruthfulQA.csv")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read TruthfulQA: %w", err)
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read TruthfulQA: %s: %w", filepath.Base(path), err)
	}
	if len(records) < 2 || len(records[0]) < 6 || strings.Join(records[0][:6], ",") != "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers" {
		return nil, fmt.Errorf("read TruthfulQA: %s: unexpected header %v", filepath.Base(path), records[0])
	}
	rows := make([]map[string]any, 0, len(records)-1)
	for _, r := range records[1:] {
		rows = append(rows, map[string]any{"question": strings.TrimSpace(r[2]), "best_answer": strings.TrimSpace(r[3]),
			"correct_answers": answers(r[4]), "incorrect_answers": answers(r[5])})
	}
	return rows, nil
}

// answers are a CSV cell's ";"-separated answers, trimmed, empty ones dropped.
func answers(cell string) []string {
	var out []string
	for _, a := range strings.Split(cell, ";") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// orderedTargets reads {answer: label, ...} in its written order, as Python's json
// reads it into a dict: a repeated answer keeps its first place and its last label.
func orderedTargets(b json.RawMessage) ([]any, []any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("not an object")
	}
	var choices, labels []any
	at := map[string]int{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		key, _ := t.(string)
		var label int
		if err := dec.Decode(&label); err != nil {
			return nil, nil, err
		}
		if i, ok := at[key]; ok {
			labels[i] = label
			continue
		}
		at[key] = len(choices)
		choices, labels = append(choices, key), append(labels, label)
	}
	return choices, labels, nil
}

// JSONLines reads a JSON-lines file into one T a line (blank lines skipped); strict
// refuses a field T does not have, and check, when given, each value with its line.
// An error names the line.
func JSONLines[T any](path string, strict bool, check ...func(line int, v T) error) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var v T
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		if strict {
			dec.DisallowUnknownFields()
		}
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", filepath.Base(path), line, err)
		}
		for _, c := range check {
			if err := c(line, v); err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
			}
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return out, nil
}

// mmluSplits are the directories of MMLU's release that hold the hub's splits.
var mmluSplits = map[string]string{"test": "test", "validation": "val", "dev": "dev"}

// mmlu reads one subject's split of MMLU as the hub's cais/mmlu has it, from the
// release's CSV files (question, four options, the answer's letter): each row its
// question, subject, choices and the answer's index.
func mmlu(dataDir, name, split string) ([]map[string]any, error) {
	dir, ok := mmluSplits[split]
	if !ok || !configName.MatchString(name) || strings.Contains(name, "..") {
		return nil, evalflow.Invalidf("dataset_name", "MMLU has its subjects' test, validation and dev splits here, not %s/%s", name, split)
	}
	path := filepath.Join(dataDir, "mmlu", dir, name+"_"+dir+".csv")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read MMLU: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = 6
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read MMLU: %s: %w", filepath.Base(path), err)
	}
	rows := make([]map[string]any, len(recs))
	for i, rec := range recs {
		answer := strings.Index("ABCD", strings.TrimSpace(rec[5]))
		if answer < 0 || len(strings.TrimSpace(rec[5])) != 1 {
			return nil, fmt.Errorf("read MMLU: %s row %d: answer %q is not A-D", filepath.Base(path), i+1, rec[5])
		}
		rows[i] = map[string]any{"question": rec[0], "subject": name,
			"choices": []any{rec[1], rec[2], rec[3], rec[4]}, "answer": answer}
	}
	return rows, nil
}
