package tasks_test

import (
	"flag"
	"fmt"
	"go/format"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/task/schema"
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
	if n := len(c.Names()); n != 4*27+5+3+1+1+3+2*57+6+1+1+2 {
		t.Errorf("%d names; want 4 forms of 27 BBH tasks, 5 groups, 3 TruthfulQA tasks, winogrande, lambada_openai, 3 GSM8K tasks, 2 forms of 57 MMLU tasks, 6 groups, ifeval, the tag truthfulqa, humaneval and humaneval_64", n)
	}
	for _, name := range c.Names() {
		if _, err := c.Resolve(name); err != nil { // every task checked
			t.Error(err)
		}
	}
	for _, g := range []string{"bbh", "bbh_zeroshot", "bbh_fewshot", "bbh_cot_zeroshot", "bbh_cot_fewshot"} {
		m, err := c.Resolve(g)
		if err != nil || len(m) != 27 {
			t.Errorf("%s: %d tasks, %v", g, len(m), err)
		}
	}
	// MMLU's groups nest: mmlu holds its four categories, each the tasks its tag names;
	// mmlu_generative holds four groups written in place.
	for g, want := range map[string]struct {
		tasks       int
		first, path string
	}{
		"mmlu":            {57, "mmlu_abstract_algebra", "mmlu/mmlu_stem"},
		"mmlu_stem":       {19, "mmlu_abstract_algebra", "mmlu_stem"},
		"mmlu_humanities": {13, "mmlu_formal_logic", "mmlu_humanities"},
		"mmlu_generative": {57, "mmlu_abstract_algebra_generative", "mmlu_generative/stem"},
	} {
		m, err := c.Resolve(g)
		if err != nil || len(m) != want.tasks {
			t.Errorf("%s: %d tasks, %v", g, len(m), err)
			continue
		}
		var path []string
		for _, pg := range m[0].Groups {
			path = append(path, pg.Group)
		}
		if strings.Join(path, "/") != want.path || m[0].Task.Task != want.first {
			t.Errorf("%s: the first task %s is scored in %v; want %s", g, m[0].Task.Task, path, want.path)
		}
	}
}

var update = flag.Bool("update", false, "rewrite shared/shipped_tasks.go from the task files and ../shared")

// The table shared's request validation and GET /tasks read (shared/shipped_tasks.go)
// says what the task files and their data say: the same names, each task's output
// type, n-shot, metrics, size and data file, each group's tasks, size and aggregated
// metrics. go generate (or go test -run TestTheTable -update) writes it.
func TestTheTableOfShippedTasksIsTheFiles(t *testing.T) {
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(testserver.SharedDir(t), "datasets")
	var want []evalflow.ShippedTask
	for _, name := range c.Names() {
		want = append(want, row(t, c, data, name))
	}
	if *update {
		writeTable(t, "../../../shared/shipped_tasks.go", want)
		return
	}
	got := evalflow.ShippedTasks()
	if len(got) != len(want) {
		t.Fatalf("the table names %d tasks and groups; the files %d (go generate ./runner/task/tasks/)", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("the table says %+v;\nthe files %+v (go generate ./runner/task/tasks/)", got[i], want[i])
		}
	}
}

// row is what the files and data say of a task, tag or group.
func row(t *testing.T, c *tasks.Catalogue, data, name string) evalflow.ShippedTask {
	if names := c.Tag(name); names != nil { // its tasks, each with its own metrics
		r := evalflow.ShippedTask{Name: name, Tag: true, Tasks: names}
		for i, n := range names {
			mr := row(t, c, data, n)
			if i == 0 {
				r.OutputType, r.NumFewshot, r.MaxFewshot, r.Source = mr.OutputType, mr.NumFewshot, mr.MaxFewshot, mr.Source
			}
			r.Samples += mr.Samples
			r.MaxFewshot = min(r.MaxFewshot, mr.MaxFewshot)
			for _, m := range mr.Metrics {
				if !slices.Contains(r.Metrics, m) {
					r.Metrics = append(r.Metrics, m)
				}
			}
			if mr.OutputType != r.OutputType {
				r.OutputType = "mixed"
			}
			if mr.Source != r.Source {
				r.Source = path.Dir(r.Source) + "/*"
			}
		}
		return r
	}
	if g := c.Group(name); g != nil {
		members, err := c.Resolve(name)
		if err != nil {
			t.Fatal(err)
		}
		first := row(t, c, data, members[0].Task.Task)
		r := evalflow.ShippedTask{Name: name, Group: true, Tasks: c.Children(g), OutputType: first.OutputType,
			NumFewshot: first.NumFewshot, MaxFewshot: first.MaxFewshot}
		files := map[string]bool{}
		r.Subjects = map[string]string{}
		for _, m := range members {
			r.Subjects[m.Task.DatasetName] = m.Task.Task
			mr := row(t, c, data, m.Task.Task)
			r.Samples += mr.Samples
			r.MaxFewshot = min(r.MaxFewshot, mr.MaxFewshot)
			files[mr.Source] = true
		}
		r.Source = first.Source
		if len(files) > 1 {
			r.Source = path.Dir(first.Source) + "/*" + path.Ext(first.Source)
		}
		for _, a := range g.AggregateMetricList {
			filters := []string(a.FilterList)
			if len(filters) == 0 {
				filters = []string{"none"}
			}
			for _, f := range filters {
				r.Metrics = append(r.Metrics, a.Metric+","+f)
			}
		}
		return r
	}
	tk := c.Task(name)
	rows, err := source.Read(data, tk)
	if err != nil {
		t.Fatal(err)
	}
	r := evalflow.ShippedTask{Name: name, OutputType: tk.OutputType, Samples: len(rows.Scored), Source: source.File(tk), RunsCode: tk.RunsCode()}
	if tk.NumFewshot != nil {
		r.NumFewshot = *tk.NumFewshot
	}
	r.MaxFewshot = maxFewshot(data, tk)
	filters := []string{"none"}
	if tk.OutputType == "generate_until" && len(tk.FilterList) > 0 {
		filters = nil
		for _, f := range tk.FilterList {
			filters = append(filters, f.Name)
		}
	}
	for _, m := range tk.MetricList {
		for _, name := range m.Names() {
			for _, f := range filters {
				r.Metrics = append(r.Metrics, name+","+f)
			}
		}
	}
	return r
}

// maxFewshot is the most examples a run may ask of tk: its inline samples, or its
// few-shot split's documents (less the one scored, drawn from its own split); none
// where that split is not here, or the task's choices are its contexts.
func maxFewshot(data string, tk *schema.Task) int {
	if tk.DocToText != nil && tk.DocToText.Func != "" {
		return 0
	}
	if tk.FewshotConfig != nil && len(tk.FewshotConfig.Samples) > 0 {
		return len(tk.FewshotConfig.Samples)
	}
	one := *tk
	one.NumFewshot = new(int)
	*one.NumFewshot = 1
	rows, err := source.Read(data, &one)
	if err != nil {
		return 0
	}
	if rows.SameSplit {
		return len(rows.Pool) - 1
	}
	return len(rows.Pool)
}

// writeTable writes the table as Go, sorted by name.
func writeTable(t *testing.T, file string, rows []evalflow.ShippedTask) {
	var b strings.Builder
	b.WriteString("// Code generated by go generate ./runner/task/tasks/ (its test, -update); DO NOT EDIT.\n\npackage evalflow\n\n")
	b.WriteString("// shippedTasks are the tasks and groups of runner/task/tasks, sorted by name.\nvar shippedTasks = []ShippedTask{\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "\t{Name: %q, Group: %v, Tag: %v, OutputType: %q, NumFewshot: %d, MaxFewshot: %d, Samples: %d, Source: %q, Metrics: %#v",
			r.Name, r.Group, r.Tag, r.OutputType, r.NumFewshot, r.MaxFewshot, r.Samples, r.Source, r.Metrics)
		if r.Tasks != nil {
			fmt.Fprintf(&b, ", Tasks: %#v", r.Tasks)
		}
		if r.Subjects != nil {
			fmt.Fprintf(&b, ", Subjects: %#v", r.Subjects)
		}
		if r.RunsCode {
			b.WriteString(", RunsCode: true")
		}
		b.WriteString("},\n")
	}
	b.WriteString("}\n")
	src, err := format.Source([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, src, 0o644); err != nil {
		t.Fatal(err)
	}
}
