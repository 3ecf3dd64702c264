package engine

import (
	"fmt"

	"github.com/evalflow/evalflow/runner/custom"
	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/truthfulqa"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Docs renders every sample the spec asks for.
func Docs(spec evalflow.JobSpec) ([]task.Doc, error) {
	var docs []task.Doc
	for _, b := range spec.Datasets {
		d, err := benchmarkDocs(spec.DataDir, b)
		if err != nil {
			return nil, err
		}
		docs = append(docs, d...)
	}
	return docs, nil
}

// benchmarkDocs renders one benchmark's samples, as its limit and seed select them,
// each task's with its lm-eval config.
func benchmarkDocs(dataDir string, b evalflow.DatasetSpec) ([]task.Doc, error) {
	size := 0 // the size of the split pick chooses from: n-samples.original
	pick := task.Picker(func(n int) []int { size = n; return task.Select(n, b.Limit, b.Seed) })
	described := func(docs []task.Doc, err error, config func(task string) task.Config) ([]task.Doc, error) {
		if err != nil {
			return nil, err
		}
		return task.Configure(withMaxTokens(docs, b.MaxTokens), size, config), nil
	}
	switch b.Name {
	case "truthfulqa":
		d, err := truthfulqa.Docs(dataDir, b.Variant, pick, truthfulqaSeed)
		return described(d, err, truthfulqa.Config)
	case "custom":
		d, err := custom.Docs(dataDir, b, pick)
		return described(d, err, func(name string) task.Config { return custom.Config(name, b) })
	}
	if _, ok := evalflow.LookupTask(b.Name); ok {
		return shippedDocs(dataDir, b)
	}
	return nil, fmt.Errorf("engine: benchmark %q is not supported", b.Name)
}

// fewshot is the benchmark's num_fewshot, or the task's default.
func fewshot(b evalflow.DatasetSpec, def int) int {
	if b.NumFewshot != nil {
		return *b.NumFewshot
	}
	return def
}

// truthfulqaSeed orders TruthfulQA MC1's answers: fixed, so every run asks the same prompts.
const truthfulqaSeed uint64 = 1234

// withMaxTokens applies a dataset's max_tokens (0: keep the task's).
func withMaxTokens(docs []task.Doc, n int) []task.Doc {
	if n > 0 {
		for i := range docs {
			docs[i].MaxTokens = n
		}
	}
	return docs
}
