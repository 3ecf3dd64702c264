package engine

import (
	"fmt"
	"slices"

	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/schema"
	"github.com/evalflow/evalflow/runner/task/source"
	"github.com/evalflow/evalflow/runner/task/tasks"
	"github.com/evalflow/evalflow/runner/task/usertask"
	evalflow "github.com/evalflow/evalflow/shared"
)

// shippedDocs renders a shipped task's documents, or each of a group's tasks' (those
// of its subjects, when the benchmark names some), from their task files, as the
// benchmark's limit, seed, num_fewshot and max_tokens select them; a group's docs
// carry how it and each group within it aggregate.
func shippedDocs(dataDir string, b evalflow.DatasetSpec) ([]task.Doc, error) {
	c, err := tasks.Shipped()
	if err != nil {
		return nil, fmt.Errorf("engine: the shipped tasks: %w", err)
	}
	members, err := c.Resolve(b.Name)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if len(b.Subjects) > 0 { // the group's tasks of those subjects
		members = slices.DeleteFunc(members, func(m tasks.Member) bool { return !slices.Contains(b.Subjects, m.Task.DatasetName) })
	}
	configs := map[*schema.Group]*task.GroupConfig{}
	var docs []task.Doc
	for _, m := range members {
		d, err := taskDocs(dataDir, m.Task, b, groupConfigs(m.Groups, configs))
		if err != nil {
			return nil, err
		}
		docs = append(docs, d...)
	}
	return docs, nil
}

// userTaskDocs renders the documents of the task a custom dataset brings in its own
// task file.
func userTaskDocs(dataDir string, b evalflow.DatasetSpec) ([]task.Doc, error) {
	t, err := usertask.Read(dataDir, b, "datasets")
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	return taskDocs(dataDir, t, b, nil)
}

// taskDocs renders one task's documents as the benchmark's limit, seed, num_fewshot
// and max_tokens select them, each carrying the task's config and how the groups it
// is in aggregate.
func taskDocs(dataDir string, t *schema.Task, b evalflow.DatasetSpec, groups []*task.GroupConfig) ([]task.Doc, error) {
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
		d[i].Config, d[i].Groups = &cfg, groups
		if len(groups) > 0 {
			d[i].Group = groups[len(groups)-1].Name
		}
	}
	return d, nil
}

// groupConfigs are how each group of a member's path aggregates, outermost first,
// each made once (made holds them).
func groupConfigs(path []*schema.Group, made map[*schema.Group]*task.GroupConfig) []*task.GroupConfig {
	var out []*task.GroupConfig
	for i, g := range path {
		cfg := made[g]
		if cfg == nil {
			cfg = &task.GroupConfig{Name: g.Group, Alias: g.Alias(), Aggregates: []task.GroupAggregate{}}
			if i > 0 {
				cfg.Parent = path[i-1].Group
			}
			for _, a := range g.AggregateMetricList {
				cfg.Aggregates = append(cfg.Aggregates, task.GroupAggregate{Metric: a.Metric, Filters: a.FilterList, WeightBySize: a.WeightBySize})
			}
			made[g] = cfg
		}
		out = append(out, cfg)
	}
	return out
}
