package schema

import (
	"bytes"
	"fmt"
	"io/fs"

	"go.yaml.in/yaml/v3"

	evalflow "github.com/evalflow/evalflow/shared"
)

// Group is a group file of lm-eval's: its tasks (or groups) and how their metrics
// aggregate into its own.
type Group struct {
	Group               string         `yaml:"group"`
	GroupAlias          string         `yaml:"group_alias"`
	Task                []string       `yaml:"task"`
	AggregateMetricList []Aggregate    `yaml:"aggregate_metric_list"`
	Metadata            map[string]any `yaml:"metadata"`
}

// Aggregate is one aggregate_metric_list entry: a metric of the group's tasks, under
// a filter, their mean weighted by size or not.
type Aggregate struct {
	Metric       string     `yaml:"metric"`
	Aggregation  string     `yaml:"aggregation"`
	WeightBySize bool       `yaml:"weight_by_size"`
	FilterList   StringList `yaml:"filter_list"`
}

// IsGroup says whether the file at name is a group file (it has `group`) rather than
// a task, or a template tasks include (it has neither `group` nor `task`).
func IsGroup(fsys fs.FS, name string) (group, task bool, err error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return false, false, err
	}
	var keys map[string]yaml.Node
	if err := yaml.Unmarshal(b, &keys); err != nil {
		return false, false, evalflow.Invalidf("task", "task file %s is not YAML: %v", name, err)
	}
	_, group = keys["group"]
	_, task = keys["task"]
	return group, task, nil
}

// LoadGroup reads the group file at name.
func LoadGroup(fsys fs.FS, name string) (*Group, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var g Group
	if err := dec.Decode(&g); err != nil {
		return nil, evalflow.Invalidf(fieldOf(err), "group %s: %v", name, err)
	}
	if g.Group == "" || len(g.Task) == 0 {
		return nil, evalflow.Invalidf("group", "group file %s names no group or no tasks", name)
	}
	for i, a := range g.AggregateMetricList {
		if a.Aggregation != "" && a.Aggregation != "mean" {
			return nil, evalflow.Invalidf(fmt.Sprintf("aggregate_metric_list[%d].aggregation", i), "group %s: %q is not one evalflow aggregates by (mean)", g.Group, a.Aggregation)
		}
	}
	return &g, nil
}
