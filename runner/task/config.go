package task

import "slices"

// Config is a task's lm-evaluation-harness config, as results.json's configs carry it
// (with versions from Metadata and n-shot from NumFewshot). Size is the scored split's
// size before limit: n-samples.original.
type Config struct {
	Task             string            `json:"task"`
	TaskAlias        string            `json:"task_alias,omitempty"`
	Tag              string            `json:"tag,omitempty"`
	DatasetPath      string            `json:"dataset_path"`
	DatasetName      string            `json:"dataset_name,omitempty"`
	TestSplit        string            `json:"test_split,omitempty"`
	ValidationSplit  string            `json:"validation_split,omitempty"`
	FewshotSplit     string            `json:"fewshot_split,omitempty"`
	NumFewshot       int               `json:"num_fewshot"`
	OutputType       string            `json:"output_type"`
	MetricList       []MetricConfig    `json:"metric_list"`
	FilterList       []FilterConfig    `json:"filter_list,omitempty"`
	GenerationKwargs *GenerationKwargs `json:"generation_kwargs,omitempty"`
	Metadata         Metadata          `json:"metadata"`
	Size             int               `json:"-"`
}

// MetricConfig is one entry of a config's metric_list.
type MetricConfig struct {
	Metric            string   `json:"metric"`
	Aggregation       string   `json:"aggregation"`
	HigherIsBetter    bool     `json:"higher_is_better"`
	IgnoreCase        bool     `json:"ignore_case,omitempty"`
	IgnorePunctuation bool     `json:"ignore_punctuation,omitempty"`
	IgnoreNumbers     bool     `json:"ignore_numbers,omitempty"`
	RegexesToIgnore   []string `json:"regexes_to_ignore,omitempty"`
}

// FilterConfig is one entry of a config's filter_list: a named chain of steps.
type FilterConfig struct {
	Name   string       `json:"name"`
	Filter []FilterStep `json:"filter"`
}

// FilterStep is one function of a filter chain (regex, take_first, ...).
type FilterStep struct {
	Function     string `json:"function"`
	RegexPattern string `json:"regex_pattern,omitempty"`
	GroupSelect  int    `json:"group_select,omitempty"`
}

// GenerationKwargs are how a generated task asks: greedy, up to MaxGenToks, cut at Until.
type GenerationKwargs struct {
	Until       []string `json:"until"`
	DoSample    bool     `json:"do_sample"`
	Temperature float64  `json:"temperature"`
	MaxGenToks  int      `json:"max_gen_toks"`
}

// Metadata carries the task's version.
type Metadata struct {
	Version float64 `json:"version"`
}

// Mean is the usual metric: the mean of the samples' scores, higher better.
func Mean(metric string) MetricConfig {
	return MetricConfig{Metric: metric, Aggregation: "mean", HigherIsBetter: true}
}

// TakeFirst is the filter of a task that keeps the response as it is.
var TakeFirst = []FilterConfig{{Name: "none", Filter: []FilterStep{{Function: "take_first"}}}}

// OutputType is lm-eval's name for how a method asks.
func OutputType(method string) string {
	switch method {
	case Logprobs, Loglikelihood:
		return "multiple_choice"
	}
	return "generate_until"
}

// Complete fills in what a config says of how docs are asked, from the first of
// them: the output type, and a generated task's generation settings.
func (c Config) Complete(d Doc) Config {
	c.OutputType = OutputType(d.Method)
	if c.OutputType == "generate_until" {
		c.GenerationKwargs = &GenerationKwargs{Until: slices.Clone(d.Stop), MaxGenToks: d.MaxTokens}
		if c.GenerationKwargs.Until == nil {
			c.GenerationKwargs.Until = []string{}
		}
	}
	if c.MetricList == nil {
		c.MetricList = []MetricConfig{Mean(d.Metric)}
	}
	if c.FilterList == nil {
		c.FilterList = TakeFirst
	}
	return c
}

// Configs are the configs of docs' tasks, in the order the tasks first appear.
func Configs(docs []Doc) []Config {
	var out []Config
	seen := map[string]bool{}
	for _, d := range docs {
		if d.Config != nil && !seen[d.Task] {
			seen[d.Task] = true
			out = append(out, *d.Config)
		}
	}
	return out
}

// Configure gives each of docs its task's config: config(task), completed from the
// task's first doc, with size the split's size before the limit.
func Configure(docs []Doc, size int, config func(task string) Config) []Doc {
	made := map[string]*Config{}
	for i, d := range docs {
		c, ok := made[d.Task]
		if !ok {
			cfg := config(d.Task).Complete(d)
			cfg.Size = size
			c, made[d.Task] = &cfg, &cfg
		}
		docs[i].Config = c
	}
	return docs
}

// GroupConfig is how a group aggregates its tasks' metrics (lm-eval's
// aggregate_metric_list): nil Aggregates aggregates every metric and filter its tasks
// have, weighted by size. A group within another aggregates its own tasks; the one
// above it, Parent, aggregates them too, among all of its own.
type GroupConfig struct {
	Name, Alias, Parent string
	Aggregates          []GroupAggregate
}

// GroupAggregate is one metric a group aggregates, under its filters ("none" when it
// names none), its tasks' means weighted by their sizes or not.
type GroupAggregate struct {
	Metric       string
	Filters      []string
	WeightBySize bool
}

// GroupConfigs are the group configs docs carry, by group.
func GroupConfigs(docs []Doc) map[string]GroupConfig {
	out := map[string]GroupConfig{}
	for _, d := range docs {
		for _, g := range d.Groups {
			out[g.Name] = *g
		}
	}
	return out
}
