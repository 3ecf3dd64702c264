// Package schema reads a task written in lm-evaluation-harness's task schema (its YAML:
// task, dataset and splits, Jinja templates, few-shot settings, output type,
// generation settings, filters and metrics, and `include` of a shared template) and
// checks it before anything is asked: an unknown field, an output type, filter or
// metric evalflow does not implement, a `!function` not in evalflow's catalogue of Go
// processors, or a template that does not parse is an error that names the field and
// the feature.
package schema

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	evalflow "github.com/evalflow/evalflow/shared"

	"github.com/evalflow/evalflow/runner/task/pyre"
	"github.com/evalflow/evalflow/runner/task/tmpl"
)

// Task is one task file, its includes merged in (the file's own fields win).
type Task struct {
	Task             string         `yaml:"task"`
	TaskAlias        string         `yaml:"task_alias"`
	Tag              StringList     `yaml:"tag"`
	DatasetPath      string         `yaml:"dataset_path"`
	DatasetName      string         `yaml:"dataset_name"`
	DatasetKwargs    map[string]any `yaml:"dataset_kwargs"`
	TrainingSplit    string         `yaml:"training_split"`
	ValidationSplit  string         `yaml:"validation_split"`
	TestSplit        string         `yaml:"test_split"`
	FewshotSplit     string         `yaml:"fewshot_split"`
	ProcessDocs      *Field         `yaml:"process_docs"`
	DocToText        *Field         `yaml:"doc_to_text"`
	DocToTarget      *Field         `yaml:"doc_to_target"`
	DocToChoice      *Field         `yaml:"doc_to_choice"`
	ProcessResults   *Field         `yaml:"process_results"`
	Description      string         `yaml:"description"`
	TargetDelimiter  *string        `yaml:"target_delimiter"`
	FewshotDelimiter *string        `yaml:"fewshot_delimiter"`
	GenPrefix        string         `yaml:"gen_prefix"`
	FewshotConfig    *FewshotConfig `yaml:"fewshot_config"`
	NumFewshot       *int           `yaml:"num_fewshot"`
	OutputType       string         `yaml:"output_type"`
	GenerationKwargs map[string]any `yaml:"generation_kwargs"`
	Repeats          int            `yaml:"repeats"`
	FilterList       []Filter       `yaml:"filter_list"`
	MetricList       []Metric       `yaml:"metric_list"`
	Metadata         map[string]any `yaml:"metadata"`
	Decontaminate    bool           `yaml:"should_decontaminate"`
	DecontaminateBy  string         `yaml:"doc_to_decontamination_query"`
	Unsafe           bool           `yaml:"unsafe_code"`
	Extra            map[string]any `yaml:",inline"`
}

// FewshotConfig is how few-shot examples are chosen: lm-eval's default sampler
// (Random(seed).sample) or first_n, from a split or inline samples.
type FewshotConfig struct {
	Sampler     string           `yaml:"sampler"`
	Split       string           `yaml:"split"`
	Samples     []map[string]any `yaml:"samples"`
	DocToText   *Field           `yaml:"doc_to_text"`
	DocToTarget *Field           `yaml:"doc_to_target"`
	DocToChoice *Field           `yaml:"doc_to_choice"`
}

// Filter is a named chain of filter steps (lm-eval's filter_list entry).
type Filter struct {
	Name   string       `yaml:"name"`
	Filter []FilterStep `yaml:"filter"`
}

// FilterStep is one function of a chain, and its arguments.
type FilterStep struct {
	Function          Field    `yaml:"function"`
	RegexPattern      string   `yaml:"regex_pattern"`
	GroupSelect       int      `yaml:"group_select"`
	Fallback          *string  `yaml:"fallback"`
	IgnoreCase        bool     `yaml:"ignore_case"`
	IgnorePunctuation bool     `yaml:"ignore_punctuation"`
	IgnoreNumbers     bool     `yaml:"ignore_numbers"`
	RegexesToIgnore   []string `yaml:"regexes_to_ignore"`
	// RegexPatternToValue maps patterns to answers (MapRegexFilter), in order.
	RegexPatternToValue Pairs `yaml:"regex_pattern_to_value"`
	// FilterFn is the !function a "custom" filter applies (HumanEval's
	// build_predictions).
	FilterFn Field `yaml:"filter_fn"`
}

// Pairs is a mapping kept in its written order.
type Pairs []Pair

// Pair is one entry of Pairs.
type Pair struct{ Key, Value string }

// UnmarshalYAML reads a mapping of strings in order.
func (p *Pairs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping of patterns to values", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		*p = append(*p, Pair{Key: n.Content[i].Value, Value: n.Content[i+1].Value})
	}
	return nil
}

// Metric is one metric_list entry.
type Metric struct {
	Metric            Field    `yaml:"metric"`
	Aggregation       Field    `yaml:"aggregation"`
	HigherIsBetter    *bool    `yaml:"higher_is_better"`
	IgnoreCase        bool     `yaml:"ignore_case"`
	IgnorePunctuation bool     `yaml:"ignore_punctuation"`
	IgnoreNumbers     bool     `yaml:"ignore_numbers"`
	RegexesToIgnore   []string `yaml:"regexes_to_ignore"`
	K                 []int    `yaml:"k"` // pass_at_k's k
}

// Names are the metric names results report it under: its own, or pass@k for each k
// of pass_at_k.
func (m Metric) Names() []string {
	if m.Metric.Func == PassAtK {
		var out []string
		for _, k := range m.K {
			out = append(out, fmt.Sprintf("pass@%d", k))
		}
		return out
	}
	return []string{m.Metric.Text}
}

// Field is a value that is a Jinja template or a name (a string), a literal (a
// number, a list), or a `!function NAME` (Func).
type Field struct {
	Func    string // the name after !function, when it is one
	Text    string // a string's value
	Literal any    // anything else
}

// UnmarshalYAML keeps a !function's name apart from a string's text.
func (f *Field) UnmarshalYAML(n *yaml.Node) error {
	switch {
	case n.Tag == "!function":
		f.Func = n.Value
	case n.Kind == yaml.ScalarNode && n.Tag == "!!str":
		f.Text = n.Value
	default:
		return n.Decode(&f.Literal)
	}
	return nil
}

// StringList is a string or a list of them.
type StringList []string

// UnmarshalYAML takes one string as a list of one.
func (s *StringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = StringList{n.Value}
		return nil
	}
	return n.Decode((*[]string)(s))
}

// maxIncludes bounds an include chain (a cycle is an error, not a hang).
const maxIncludes = 8

// A Loader reads the task and group files of one file system, each file parsed once
// however many tasks include it.
type Loader struct {
	fsys   fs.FS
	parsed map[string]*yaml.Node
}

// NewLoader reads files of fsys.
func NewLoader(fsys fs.FS) *Loader { return &Loader{fsys: fsys, parsed: map[string]*yaml.Node{}} }

// Load reads the task file at name in fsys, merging the files it includes (paths
// relative to it) under it.
func Load(fsys fs.FS, name string) (*Task, error) { return NewLoader(fsys).Task(name) }

// File reads the file at name: a group file (it has `group`), a task (it has `task`;
// its includes merged under it), or neither (a template tasks include): nil, nil.
func (l *Loader) File(name string) (*Task, *Group, error) {
	own, err := l.parse(name)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case value(own, "group") != nil:
		g, err := groupOf(own, name)
		return nil, g, err
	case value(own, "task") != nil:
		t, err := l.Task(name)
		return t, nil, err
	}
	return nil, nil, nil
}

// Head reads what a catalogue knows a file by, without decoding a task: a group file's
// group, or a task's name and tags (its includes merged under it); for a template,
// neither.
func (l *Loader) Head(name string) (task string, tags []string, g *Group, err error) {
	own, err := l.parse(name)
	if err != nil {
		return "", nil, nil, err
	}
	if value(own, "group") != nil {
		g, err := groupOf(own, name)
		return "", nil, g, err
	}
	if value(own, "task") == nil {
		return "", nil, nil, nil
	}
	merged, err := l.merged(name, 0)
	if err != nil {
		return "", nil, nil, err
	}
	if tag := value(merged, "tag"); tag != nil {
		var list StringList
		if err := tag.Decode(&list); err != nil {
			return "", nil, nil, evalflow.Invalidf("tag", "task file %s: %v", name, err)
		}
		tags = list
	}
	return value(merged, "task").Value, tags, nil, nil
}

// Task reads the task file at name, its includes merged under it.
func (l *Loader) Task(name string) (*Task, error) {
	merged, err := l.merged(name, 0)
	if err != nil {
		return nil, err
	}
	var t Task
	if err := strictDecode(merged, &t); err != nil {
		return nil, evalflow.Invalidf(fieldOf(err), "task %s: %v", name, err)
	}
	return &t, nil
}

// strictDecode decodes n into v, refusing a field v does not have.
func strictDecode(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// parse reads and parses the file at name once; the mapping it holds is shared, never
// changed.
func (l *Loader) parse(name string) (*yaml.Node, error) {
	if n, ok := l.parsed[name]; ok {
		return n, nil
	}
	b, err := fs.ReadFile(l.fsys, name)
	if err != nil {
		return nil, evalflow.Invalidf("include", "task file %s: %v", name, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, evalflow.Invalidf("task", "task file %s is not YAML: %v", name, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, evalflow.Invalidf("task", "task file %s is not a mapping", name)
	}
	l.parsed[name] = doc.Content[0]
	return doc.Content[0], nil
}

// value is the value of key in mapping m, or nil.
func value(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// merged is the file at name with what it includes merged under it.
func (l *Loader) merged(name string, depth int) (*yaml.Node, error) {
	if depth > maxIncludes {
		return nil, evalflow.Invalidf("include", "task %s: includes nest deeper than %d (a cycle?)", name, maxIncludes)
	}
	own, err := l.parse(name)
	if err != nil {
		var e *evalflow.Error
		if depth == 0 && errors.As(err, &e) && e.Field == "include" { // the file itself, not one it includes
			e.Field = ""
		}
		return nil, err
	}
	include := value(own, "include")
	if include == nil {
		return own, nil
	}
	base, err := l.merged(path.Join(path.Dir(name), include.Value), depth+1)
	if err != nil {
		return nil, err
	}
	return merge(base, own), nil
}

// merge is base with own's keys set over it (own wins, its include left out), as
// lm-eval merges an include; neither is changed.
func merge(base, own *yaml.Node) *yaml.Node {
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	index := map[string]int{}
	for _, m := range []*yaml.Node{base, own} {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k := m.Content[i].Value
			if k == "include" {
				continue
			}
			if j, ok := index[k]; ok {
				out.Content[j+1] = m.Content[i+1]
				continue
			}
			index[k] = len(out.Content)
			out.Content = append(out.Content, m.Content[i], m.Content[i+1])
		}
	}
	return out
}

// fieldOf is the field a decoding error names (yaml: "field X not found"), or "task".
func fieldOf(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "field "); i >= 0 {
		if f := strings.Fields(msg[i+len("field "):]); len(f) > 0 {
			return f[0]
		}
	}
	return "task"
}

// Output types, filters and metrics evalflow implements.
var (
	OutputTypes = []string{"generate_until", "multiple_choice", "loglikelihood"}
	Filters     = []string{"regex", "take_first", "lowercase", "uppercase", "remove_whitespace", "custom"}
	Metrics     = []string{"exact_match", "acc", "acc_norm", "perplexity"}
	// Functions are the Go processors a document field's !function may name.
	Functions = slices.Sorted(maps.Keys(docProcessors))
	// ResultsFunctions are the Go processors process_results may name: of a
	// multiple-choice task, of a generate_until task.
	ResultsFunctions = map[string][]string{
		"multiple_choice": slices.Sorted(maps.Keys(resultsProcessors)),
		"generate_until":  slices.Sorted(maps.Keys(generationProcessors)),
	}
	// DocsFunctions are the Go processors process_docs may name.
	DocsFunctions = slices.Sorted(maps.Keys(docsProcessors))
	// FilterFunctions are the Go processors a filter's !function may name.
	FilterFunctions = slices.Sorted(maps.Keys(processors))
	// Aggregations are how a metric_list entry may aggregate; AggregationFunctions
	// the Go processors its !function may name (each a mean of every value of a
	// list-valued metric).
	Aggregations         = []string{"mean", "perplexity"}
	AggregationFunctions = []string{"utils.agg_inst_level_acc"}
	// MetricFunctions are the Go processors a metric's !function may name (each a
	// program run in a sandbox); CustomFilterFunctions those a custom filter may.
	MetricFunctions       = []string{PassAtK}
	CustomFilterFunctions = slices.Sorted(maps.Keys(customFilters))
)

// GenerationKwargs are the generation_kwargs evalflow reads: the stop sequences and
// the answer's bound, and the sampling lm-eval's API models send (do_sample itself is
// not sent).
var GenerationKwargs = []string{"until", "max_gen_toks", "do_sample", "temperature", "top_p"}

// PassAtK is HumanEval's metric: the share of documents whose program passes its
// tests, estimated for each k from the repeats programs asked of each document.
const PassAtK = evalflow.PassAtKFunction

// RunsCode says whether t's score runs the model's code (in a sandbox).
func (t *Task) RunsCode() bool {
	return slices.ContainsFunc(t.MetricList, func(m Metric) bool { return m.Metric.Func == PassAtK })
}

// Check refuses what evalflow cannot run as lm-eval runs it, naming the field and the
// feature; templates are compiled, and regular expressions too.
func (t *Task) Check() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, evalflow.Invalidf(field, format, args...))
	}
	if t.Task == "" {
		bad("task", "is required")
	}
	if t.OutputType != "" && !slices.Contains(OutputTypes, t.OutputType) {
		bad("output_type", "%q is not one evalflow runs (%s)", t.OutputType, strings.Join(OutputTypes, ", "))
	}
	for _, f := range []struct {
		name  string
		field *Field
		known []string
	}{
		{"process_docs", t.ProcessDocs, DocsFunctions}, {"doc_to_text", t.DocToText, Functions},
		{"doc_to_target", t.DocToTarget, Functions}, {"doc_to_choice", t.DocToChoice, Functions},
		{"process_results", t.ProcessResults, ResultsFunctions[t.OutputType]},
	} {
		if err := f.field.check(f.name, f.known); err != nil {
			errs = append(errs, err)
		}
	}
	for i, fl := range t.FilterList {
		for j, st := range fl.Filter {
			field := fmt.Sprintf("filter_list[%d].filter[%d]", i, j)
			switch fn := st.Function; {
			case fn.Func != "":
				if err := fn.check(field+".function", FilterFunctions); err != nil {
					errs = append(errs, err)
				}
			case !slices.Contains(Filters, fn.Text):
				bad(field+".function", "filter %q is not one evalflow implements (%s)", fn.Text, strings.Join(Filters, ", "))
			case fn.Text == "custom":
				if err := st.FilterFn.check(field+".filter_fn", CustomFilterFunctions); err != nil {
					errs = append(errs, err)
				} else if st.FilterFn.Func == "" {
					bad(field+".filter_fn", "a custom filter names its !function")
				}
			}
			if st.RegexPattern != "" {
				if _, err := pyre.Compile(st.RegexPattern); err != nil {
					bad(field+".regex_pattern", "%v", err)
				}
			}
			for k, re := range st.RegexesToIgnore {
				if _, err := pyre.Compile(re); err != nil {
					bad(fmt.Sprintf("%s.regexes_to_ignore[%d]", field, k), "%v", err)
				}
			}
		}
	}
	if t.GenPrefix != "" {
		bad("gen_prefix", "evalflow does not yet begin the response with a prefix: leave it out")
	}
	for _, k := range slices.Sorted(maps.Keys(t.GenerationKwargs)) {
		if !slices.Contains(GenerationKwargs, k) {
			bad("generation_kwargs."+k, "evalflow sends %s only", strings.Join(GenerationKwargs, ", "))
		}
	}
	if t.Repeats > 1 && !t.RunsCode() {
		bad("repeats", "evalflow repeats only tasks scored by %s (pass@k over the programs asked): this one asks each document once", PassAtK)
	}
	ownMetrics := t.ProcessResults != nil && t.ProcessResults.Func != "" // a processor names its own
	for i, m := range t.MetricList {
		switch agg, field := m.Aggregation, fmt.Sprintf("metric_list[%d].aggregation", i); {
		case agg.Func != "":
			if err := agg.check(field, AggregationFunctions); err != nil {
				errs = append(errs, err)
			}
		case agg.Text != "" && !slices.Contains(Aggregations, agg.Text):
			bad(field, "aggregation %q is not one evalflow implements (%s)", agg.Text, strings.Join(Aggregations, ", "))
		}
		field := fmt.Sprintf("metric_list[%d].metric", i)
		if m.Metric.Func != "" {
			if err := m.Metric.check(field, MetricFunctions); err != nil {
				errs = append(errs, err)
			}
			if m.Metric.Func == PassAtK {
				if len(m.K) == 0 {
					bad(fmt.Sprintf("metric_list[%d].k", i), "is required: the k of pass@k, e.g. [1]")
				}
				for _, k := range m.K {
					if k < 1 || k > max(1, t.Repeats) {
						bad(fmt.Sprintf("metric_list[%d].k", i), "k %d: pass@k needs 1 ≤ k ≤ repeats (%d), the programs asked of each document", k, max(1, t.Repeats))
					}
				}
			}
		} else if !slices.Contains(Metrics, m.Metric.Text) && !ownMetrics {
			bad(field, "metric %q is not one evalflow implements (%s)", m.Metric.Text, strings.Join(Metrics, ", "))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(t.Extra)) {
		bad(k, "is not a field of lm-eval's task schema evalflow knows")
	}
	return errors.Join(errs...)
}

// check refuses a !function not in the catalogue and a template that does not parse.
func (f *Field) check(field string, known []string) error {
	switch {
	case f == nil:
		return nil
	case f.Func != "" && !slices.Contains(known, f.Func):
		return evalflow.Invalidf(field, "!function %s is Python of lm-eval's that evalflow has no Go processor for (it has: %s)", f.Func, cmp.Or(strings.Join(known, ", "), "none"))
	case f.Text != "":
		if _, err := tmpl.Compile(f.Text); err != nil {
			return evalflow.Invalidf(field, "%v", err)
		}
	}
	return nil
}
