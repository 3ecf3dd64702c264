package schema

import (
	"fmt"

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

// groupOf decodes a group file's mapping.
func groupOf(n *yaml.Node, name string) (*Group, error) {
	var g Group
	if err := strictDecode(n, &g); err != nil {
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
