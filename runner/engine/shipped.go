package engine

import (
	"fmt"

	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/schema"
	"github.com/evalflow/evalflow/runner/task/source"
	"github.com/evalflow/evalflow/runner/task/tasks"
	evalflow "github.com/evalflow/evalflow/shared"
)

// shippedDocs renders a shipped task's documents, or each of a group's tasks', from
// their task files, as the benchmark's limit, seed, num_fewshot and max_tokens
// select them; a group's docs carry how it aggregates.
func shippedDocs(dataDir string, b evalflow.DatasetSpec) ([]task.Doc, error) {
	c, err := tasks.Shipped()
	if err != nil {
		return nil, fmt.Errorf("engine: the shipped tasks: %w", err)
	}
	members, err := c.Resolve(b.Name)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	var group *task.GroupConfig
	if g := c.Group(b.Name); g != nil {
		group = groupConfig(g)
	}
	var docs []task.Doc
	for _, m := range members {
		t := m.Task
		if b.NumFewshot != nil {
			own := *t
			own.NumFewshot = b.NumFewshot
			t = &own
		}
		rows, err := source.Read(dataDir, t)
		if err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		d, err := t.Docs(rows.Scored, rows.Pool, rows.SameSplit, task.Select(len(rows.Scored), b.Limit, b.Seed))
		if err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		cfg := t.Config()
		cfg.Size = len(rows.Scored)
		for i := range withMaxTokens(d, b.MaxTokens) {
			d[i].Group, d[i].Config, d[i].GroupConfig = m.Group, &cfg, group
		}
		docs = append(docs, d...)
	}
	return docs, nil
}

// groupConfig is how a group file aggregates.
func groupConfig(g *schema.Group) *task.GroupConfig {
	out := &task.GroupConfig{Aggregates: []task.GroupAggregate{}}
	for _, a := range g.AggregateMetricList {
		out.Aggregates = append(out.Aggregates, task.GroupAggregate{Metric: a.Metric, Filters: a.FilterList, WeightBySize: a.WeightBySize})
	}
	return out
}
