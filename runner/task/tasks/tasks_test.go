package tasks_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/task/source"
	evalflow "github.com/evalflow/evalflow/shared"

	"github.com/evalflow/evalflow/runner/task/tasks"
)

// Every shipped file reads and passes the schema's check; each form's group holds its
// 27 tasks.
func TestTheShippedTasksReadAndCheck(t *testing.T) {
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.Names()); n != 4*27+5 {
		t.Errorf("%d names; want 4 forms of 27 tasks and 5 groups", n)
	}
	for _, g := range []string{"bbh", "bbh_zeroshot", "bbh_fewshot", "bbh_cot_zeroshot", "bbh_cot_fewshot"} {
		m, err := c.Resolve(g)
		if err != nil || len(m) != 27 {
			t.Errorf("%s: %d tasks, %v", g, len(m), err)
		}
	}
}

// The table shared's request validation reads (shared/shipped_tasks.go) says what the
// task files say: the same names, each task's output type, n-shot and metrics, each
// group's tasks and aggregated metric; and, with ../shared, each task's size.
func TestTheTableOfShippedTasksIsTheFiles(t *testing.T) {
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, row := range evalflow.ShippedTasks() {
		names = append(names, row.Name)
		if g := c.Group(row.Name); g != nil {
			var metrics []string
			for _, a := range g.AggregateMetricList {
				filters := []string(a.FilterList)
				if len(filters) == 0 {
					filters = []string{"none"}
				}
				for _, f := range filters {
					metrics = append(metrics, a.Metric+","+f)
				}
			}
			if !row.Group || !slices.Equal(row.Tasks, g.Task) || !slices.Equal(row.Metrics, metrics) {
				t.Errorf("%s: the table says %+v; the file %+v", row.Name, row, g)
			}
			continue
		}
		tk := c.Task(row.Name)
		if tk == nil {
			t.Errorf("the table has %s; no file does", row.Name)
			continue
		}
		var metrics []string
		for _, f := range tk.FilterList {
			metrics = append(metrics, tk.MetricList[0].Metric.Text+","+f.Name)
		}
		if len(metrics) == 0 {
			metrics = []string{tk.MetricList[0].Metric.Text + ",none"}
		}
		if row.Group || row.OutputType != tk.OutputType || row.NumFewshot != *tk.NumFewshot || !slices.Equal(row.Metrics, metrics) {
			t.Errorf("%s: the table says %+v; the file %s, %d-shot, %v", row.Name, row, tk.OutputType, *tk.NumFewshot, metrics)
		}
	}
	if !slices.Equal(names, c.Names()) {
		t.Errorf("the table names %d tasks and groups; the files %d", len(names), len(c.Names()))
	}
	data := filepath.Join(testserver.SharedDir(t), "datasets")
	for _, row := range evalflow.ShippedTasks() {
		if tk := c.Task(row.Name); tk != nil {
			rows, err := source.Read(data, tk)
			if err != nil || len(rows.Scored) != row.Samples {
				t.Errorf("%s: %d documents (%v); the table says %d", row.Name, len(rows.Scored), err, row.Samples)
			}
		}
	}
}
