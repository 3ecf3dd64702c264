package engine

import (
	"fmt"

	"github.com/evalflow/evalflow/runner/custom"
	"github.com/evalflow/evalflow/runner/task"
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
// each task's with its lm-eval config: a custom dataset's, or a shipped task's.
func benchmarkDocs(dataDir string, b evalflow.DatasetSpec) ([]task.Doc, error) {
	if b.TaskYAML != "" || b.TaskFile != "" {
		return userTaskDocs(dataDir, b)
	}
	if b.Name == "custom" {
		size := 0 // the size of the split pick chooses from: n-samples.original
		pick := task.Picker(func(n int) []int { size = n; return task.Select(n, b.Limit, b.Seed) })
		d, err := custom.Docs(dataDir, b, pick)
		if err != nil {
			return nil, err
		}
		return task.Configure(withMaxTokens(d, b.MaxTokens), size, func(name string) task.Config { return custom.Config(name, b) }), nil
	}
	if _, ok := evalflow.LookupTask(b.Name); ok {
		return shippedDocs(dataDir, b)
	}
	return nil, fmt.Errorf("engine: benchmark %q is not supported", b.Name)
}

// withMaxTokens applies a dataset's max_tokens (0: keep the task's).
func withMaxTokens(docs []task.Doc, n int) []task.Doc {
	if n > 0 {
		for i := range docs {
			docs[i].MaxTokens = n
		}
	}
	return docs
}
