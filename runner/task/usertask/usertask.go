// Package usertask reads the task a run brings itself — a custom dataset's task file in
// lm-eval's schema, inline (task_yaml) or under the data directory's custom/
// (task_file) — and checks it before anything is stored or asked: a field the schema
// does not have, a feature evalflow does not implement, a template or pattern that
// does not parse, a dataset it cannot read, each an invalid-input error that names the
// field within the request's (datasets[0].task_yaml.metric_list[0].metric).
package usertask

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"testing/fstest"

	"github.com/evalflow/evalflow/runner/task/schema"
	"github.com/evalflow/evalflow/runner/task/source"
	evalflow "github.com/evalflow/evalflow/shared"
)

// inline is the name an inline task file is read under.
const inline = "task.yaml"

// Read reads and checks the task file dataset d brings; field is d's in the request
// (datasets[0]). An inline one is read as it is; a file under dataDir's custom/, with
// what it includes there.
func Read(dataDir string, d evalflow.DatasetSpec, field string) (*schema.Task, error) {
	var t *schema.Task
	var err error
	at := field + ".task_yaml"
	switch {
	case d.TaskYAML != "":
		t, err = schema.NewLoader(fstest.MapFS{inline: {Data: []byte(d.TaskYAML)}}).Task(inline)
	case d.TaskFile != "":
		at = field + ".task_file"
		t, err = schema.NewLoader(os.DirFS(filepath.Join(dataDir, "custom"))).Task(filepath.ToSlash(d.TaskFile))
	default:
		return nil, evalflow.Invalidf(field, "brings no task file")
	}
	if err == nil {
		err = t.Check()
	}
	if err == nil {
		err = source.Check(t)
	}
	if err == nil {
		if _, shipped := evalflow.LookupTask(t.Task); shipped {
			err = evalflow.Invalidf("task", "%s is the name of a task evalflow ships: name yours otherwise", t.Task)
		}
	}
	if err != nil {
		return nil, evalflow.Within(at, err)
	}
	return t, nil
}

// Check checks the task file each dataset brings inline — and, given the data
// directory, each one in a file there — as a run reads them.
// Each task's name is its own: two datasets' tasks may not share one.
func Check(dataDir string, datasets []evalflow.DatasetSpec) error {
	named := map[string]bool{}
	for _, d := range datasets {
		if d.Name == "custom" && d.TaskYAML == "" && d.TaskFile == "" {
			named[cmp.Or(d.Task, "custom")] = true
		}
	}
	for i, d := range datasets {
		if d.TaskYAML == "" && (d.TaskFile == "" || dataDir == "") {
			continue
		}
		field := fmt.Sprintf("datasets[%d]", i)
		t, err := Read(dataDir, d, field)
		if err != nil {
			return err
		}
		if named[t.Task] {
			return evalflow.Within(field+map[bool]string{true: ".task_yaml", false: ".task_file"}[d.TaskYAML != ""],
				evalflow.Invalidf("task", "%s is another dataset's task too: name each its own", t.Task))
		}
		named[t.Task] = true
	}
	return nil
}
