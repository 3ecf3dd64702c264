package schema

import (
	"cmp"
	"fmt"

	"go.yaml.in/yaml/v3"

	evalflow "github.com/evalflow/evalflow/shared"
)

// Group is a group file of lm-eval's: its tasks (or groups, or tags) and how their
// metrics aggregate into its own.
type Group struct {
	Group               string         `yaml:"group"`
	GroupAlias          string         `yaml:"group_alias"`
	Task                []Member       `yaml:"task"`
	AggregateMetricList []Aggregate    `yaml:"aggregate_metric_list"`
	Metadata            map[string]any `yaml:"metadata"`
}

// Member is one entry of a group's task list: the name of a task, a group or a tag,
// or a group written in place (lm-eval's mmlu_generative writes its four so).
type Member struct {
	Name   string
	Inline *Group
}

// UnmarshalYAML reads a name, or a group written in place.
func (m *Member) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		m.Name = n.Value
		return nil
	}
	g, err := groupOf(n, fmt.Sprintf("written in place at line %d", n.Line))
	if err != nil {
		return err
	}
	m.Inline = g
	return nil
}

// Alias is how results name the group: its group_alias, else its name.
func (g *Group) Alias() string { return cmp.Or(g.GroupAlias, g.Group) }

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
