package evalflow

import (
	"math"
	"slices"
	"strings"
)

// Sample is one scored sample as callers read it: a line of samples.jsonl, without
// the engine's per-filter detail. Extracted and Correct are the primary filter's.
type Sample struct {
	Task     string `json:"task"`
	Group    string `json:"group,omitempty"`
	DocID    int    `json:"doc_id"`
	Prompt   string `json:"prompt"`
	Response string `json:"response"`
	// Responses are every response asked of the document, where it was asked more
	// than once (a task's repeats); Response is the first.
	Responses []string `json:"responses,omitempty"`
	Extracted string   `json:"extracted"`
	Target    string   `json:"target"`
	Correct   bool     `json:"correct"`
	Metric    string   `json:"metric,omitempty"`
	Usage     Usage    `json:"usage"`
}

// sampleKey names a sample within a run: its task and document.
type sampleKey struct {
	task string
	doc  int
}

// Samples are a run's scored samples, read once and queried many times.
type Samples struct {
	list []Sample
	// text is each sample's searchable text, lower-cased once, in the background
	// after the samples are read (searchable closes when it is there).
	text       []string
	searchable chan struct{}
	index      map[sampleKey]int
}

// NewSamples indexes a run's samples, in the file's order, for queries. Their
// searchable text is made in the background: the first page does not wait for it.
func NewSamples(list []Sample) *Samples {
	s := &Samples{list: list, index: make(map[sampleKey]int, len(list)), searchable: make(chan struct{})}
	for i, x := range list {
		s.index[sampleKey{x.Task, x.DocID}] = i
	}
	go func() {
		defer close(s.searchable)
		text := make([]string, len(list))
		for i, x := range list {
			text[i] = strings.ToLower(x.Prompt + "\x00" + x.Response + "\x00" + x.Extracted + "\x00" + x.Target)
		}
		s.text = text
	}()
	return s
}

// searchText is each sample's searchable text, once it is made.
func (s *Samples) searchText() []string {
	<-s.searchable
	return s.text
}

// Compact is s with only what Compare reads of a run after the first: each sample's
// task, group, document, extracted answer and correctness. A full MMLU run's samples
// take some 100 MB; compacted, a few.
func (s *Samples) Compact() *Samples {
	c := &Samples{list: make([]Sample, len(s.list)), text: make([]string, len(s.list)), searchable: make(chan struct{}), index: s.index}
	close(c.searchable)
	for i, x := range s.list {
		c.list[i] = Sample{Task: x.Task, Group: x.Group, DocID: x.DocID, Extracted: x.Extracted, Correct: x.Correct}
	}
	return c
}

// Len is how many samples there are.
func (s *Samples) Len() int { return len(s.list) }

// find is the sample of task's document doc.
func (s *Samples) find(task string, doc int) (Sample, bool) {
	i, ok := s.index[sampleKey{task, doc}]
	if !ok {
		return Sample{}, false
	}
	return s.list[i], true
}

// SampleQuery selects samples: of one task (or group), correct or wrong, containing a
// text (case-insensitively, in the prompt, response, extracted answer or target), a
// page of them.
type SampleQuery struct {
	Task    string
	Correct *bool
	Text    string
	Offset  int
	Limit   int
}

// MaxSamplePage bounds a page of samples.
const MaxSamplePage = 1000

// Validate names the field of q that is out of range.
func (q SampleQuery) Validate() error {
	if q.Offset < 0 {
		return Invalidf("offset", "must be 0 or more")
	}
	if q.Limit < 0 || q.Limit > MaxSamplePage {
		return Invalidf("limit", "must be from 1 to %d", MaxSamplePage)
	}
	return nil
}

// TaskCount is how many of a task's samples there are, and how many are correct.
type TaskCount struct {
	Task    string `json:"task"`
	Samples int    `json:"samples"`
	Correct int    `json:"correct"`
}

// SamplePage is the answer to a SampleQuery.
type SamplePage struct {
	Total   int         `json:"total"`   // samples in the run
	Matched int         `json:"matched"` // samples the query selects
	Offset  int         `json:"offset"`
	Tasks   []TaskCount `json:"tasks"` // every task of the run
	Samples []Sample    `json:"samples"`
}

// Query answers q (Limit 0: 50).
func (s *Samples) Query(q SampleQuery) SamplePage {
	limit := q.Limit
	if limit == 0 {
		limit = 50
	}
	needle := strings.ToLower(q.Text)
	var text []string
	if needle != "" {
		text = s.searchText()
	}
	page := SamplePage{Total: len(s.list), Offset: q.Offset, Samples: []Sample{}}
	counts := map[string]*TaskCount{}
	for i, x := range s.list {
		c := counts[x.Task]
		if c == nil {
			c = &TaskCount{Task: x.Task}
			counts[x.Task] = c
		}
		c.Samples++
		if x.Correct {
			c.Correct++
		}
		if q.Task != "" && x.Task != q.Task && x.Group != q.Task ||
			q.Correct != nil && x.Correct != *q.Correct ||
			needle != "" && !strings.Contains(text[i], needle) {
			continue
		}
		if page.Matched >= q.Offset && len(page.Samples) < limit {
			page.Samples = append(page.Samples, x)
		}
		page.Matched++
	}
	for _, c := range counts {
		page.Tasks = append(page.Tasks, *c)
	}
	slices.SortFunc(page.Tasks, func(a, b TaskCount) int { return strings.Compare(a.Task, b.Task) })
	return page
}

// TaskScore is a task's (or group's) primary score with its standard error, as
// results.json gives them.
type TaskScore struct {
	Task   string  `json:"task"`
	Group  bool    `json:"group,omitempty"`
	Metric string  `json:"metric"`
	Filter string  `json:"filter,omitempty"`
	Value  float64 `json:"value"`
	Stderr float64 `json:"stderr"`
	// Samples is how many samples were scored (0 where results.json does not say).
	Samples int `json:"samples,omitempty"`
}

// Scores are the summary's scores with their standard errors: tasks first, then
// groups, each by name.
func (r *Results) Scores() []TaskScore {
	var out []TaskScore
	for name, value := range r.Summary.Scores {
		metric := r.Summary.Metrics[name]
		if metric == "" {
			metric = r.Summary.Metric
		}
		ts := TaskScore{Task: name, Metric: metric, Value: value, Samples: r.NSamples[name].Effective}
		_, ts.Group = r.Groups[name]
		ts.Filter, ts.Stderr = r.stderrOf(name, metric, value)
		out = append(out, ts)
	}
	slices.SortFunc(out, tasksThenGroups)
	return out
}

// stderrOf finds, among name's "metric,filter" entries, the one that gave value, and
// its "metric_stderr,filter" (a task scored by several filters, as GSM8K, has one a
// filter).
func (r *Results) stderrOf(name, metric string, value float64) (string, float64) {
	entries := r.Results[name]
	if g, ok := r.Groups[name]; ok {
		entries = g
	}
	filters := []string{}
	for k := range entries {
		if f, ok := strings.CutPrefix(k, metric+","); ok {
			filters = append(filters, f)
		}
	}
	slices.Sort(filters)
	for _, f := range filters {
		v, ok := entries[metric+","+f].(float64)
		if !ok || math.Abs(v-value) > 1e-12 {
			continue
		}
		stderr, _ := entries[metric+"_stderr,"+f].(float64)
		return f, stderr
	}
	return "", 0
}

// tasksThenGroups orders scores: tasks first, then groups, each by name.
func tasksThenGroups(a, b TaskScore) int {
	if a.Group != b.Group {
		if a.Group {
			return 1
		}
		return -1
	}
	return strings.Compare(a.Task, b.Task)
}
