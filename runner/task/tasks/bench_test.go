package tasks_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/evalflow/evalflow/runner/sandbox"
	"github.com/evalflow/evalflow/runner/task/source"
	"github.com/evalflow/evalflow/runner/task/tasks"
)

// BenchmarkRenderBBH renders every one of BBH's 6,511 documents in each form with its
// few-shot context (text and chat turns), as a run's Docs does, the data read
// beforehand: the figure in docs/benchmarks.md.
//
//	EVALFLOW_SHARED_DIR=../shared go test -run XXX -bench RenderBBH -cpu 1 ./runner/task/tasks/
func BenchmarkRenderBBH(b *testing.B) {
	dir := os.Getenv("EVALFLOW_SHARED_DIR")
	if dir == "" {
		dir = "../../../../shared"
	}
	data := filepath.Join(dir, "datasets")
	if _, err := os.Stat(filepath.Join(data, "bbh")); err != nil {
		b.Skip("no BBH data: set EVALFLOW_SHARED_DIR (../shared/DATA.md)")
	}
	c, err := tasks.Shipped()
	if err != nil {
		b.Fatal(err)
	}
	for _, form := range []string{"bbh_zeroshot", "bbh_fewshot", "bbh_cot_zeroshot", "bbh_cot_fewshot"} {
		members, err := c.Resolve(form)
		if err != nil {
			b.Fatal(err)
		}
		rows := make([]source.Rows, len(members))
		for i, m := range members {
			if rows[i], err = source.Read(data, m.Task); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(form, func(b *testing.B) {
			var bytes int
			for b.Loop() {
				bytes = 0
				for i, m := range members {
					docs, err := m.Task.Docs(rows[i].Scored, rows[i].Pool, rows[i].SameSplit, nil)
					if err != nil {
						b.Fatal(err)
					}
					for _, d := range docs {
						bytes += len(d.Prompt)
					}
				}
			}
			b.ReportMetric(float64(bytes)/1e6, "MB-rendered")
		})
	}
}

// BenchmarkReadCatalogue reads every shipped task and group file, as a runner does
// once when it starts a run of a shipped task.
//
//	go test -run XXX -bench ReadCatalogue -cpu 1 ./runner/task/tasks/
func BenchmarkReadCatalogue(b *testing.B) {
	for b.Loop() {
		if _, err := tasks.Read(os.DirFS(".")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalSolutions runs HumanEval's 164 canonical solutions, each with its
// tests, in the local sandbox, as many at once as there are cores: one op is all 164.
//
//	EVALFLOW_SHARED_DIR=../shared go test -run XXX -bench CanonicalSolutions -benchtime 3x ./runner/task/tasks/
func BenchmarkCanonicalSolutions(b *testing.B) {
	dir := os.Getenv("EVALFLOW_SHARED_DIR")
	if dir == "" {
		dir = "../../../../shared"
	}
	c, err := tasks.Shipped()
	if err != nil {
		b.Fatal(err)
	}
	tk := c.Task("humaneval")
	rows, err := source.Read(filepath.Join(dir, "datasets"), tk)
	if err != nil {
		b.Skip("no HumanEval data: set EVALFLOW_SHARED_DIR (../shared/DATA.md)")
	}
	docs, err := tk.Docs(rows.Scored, nil, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	s, err := sandbox.NewLocal(sandbox.DefaultLimits, runtime.NumCPU())
	if err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		var wg sync.WaitGroup
		var failed atomic.Int64
		for _, d := range docs {
			wg.Go(func() {
				if r, err := s.Run(context.Background(), d.Program(rows.Scored[d.Index]["canonical_solution"].(string)).Code); err != nil || !r.Passed {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n != 0 {
			b.Fatalf("%d canonical solutions failed", n)
		}
	}
}
