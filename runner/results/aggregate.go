package results

import (
	"cmp"
	"encoding/json"
	"maps"
	"math"
	"slices"

	"github.com/evalflow/evalflow/runner/task"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Run is what results.json says of a run beside its samples' scores.
type Run struct {
	Spec evalflow.JobSpec
	// Tasks are the tasks' lm-eval configs, in order; none where an engine gives none.
	Tasks []task.Config
	// Concurrency is how many requests the engine kept in flight (sized to the
	// endpoint when the spec asked for 0).
	Concurrency int
	// Errors counts samples that failed after retries, left out of the scores.
	Errors int
	// Groups are how groups aggregate, by group (none: every metric and filter).
	Groups map[string]task.GroupConfig
}

// Aggregate computes lm-eval style results: each metric per task and filter with its
// standard error ("exact_match,<filter>"), each group's as lm-eval aggregates it (the
// metrics its config names, else every one its tasks have: the tasks' means weighted
// by their sizes, the pooled standard error), and each task's config, version and
// n-shot. The summary's score of a task is its primary filter's: its group's
// aggregated one, else its first.
func Aggregate(run Run, samples []Sample) *evalflow.Results {
	t := tally(samples, run.Groups)
	for _, c := range run.Tasks {
		if c.TaskAlias != "" {
			t.alias[c.Task] = c.TaskAlias
		}
	}
	res := header(run, t)
	for _, k := range t.order {
		t.report(res, k)
	}
	for _, g := range t.groups {
		t.reportGroup(res, g, run.Groups[g])
	}
	describe(res, run.Tasks)
	return res
}

// key names one aggregate: a task, a metric and a filter.
type key struct{ scope, metric, filter string }

type acc struct {
	n          int
	sum, sumSq float64
	values     []float64               // kept for a metric aggregated otherwise than by mean
	aggregate  func([]float64) float64 // that aggregation
	listed     bool                    // a list-valued metric's: no stderr, as lm-eval gives none ("N/A")
	stat       *[2]float64             // stats, once computed (a bootstrap is costly)
}

// stats are the mean and its standard error (the sample standard deviation over
// sqrt(n), as lm-eval's mean_stderr); or the metric's own aggregation and its
// bootstrapped standard error (lm-eval's, BootstrapIters resamples).
func (a *acc) stats() (p, stderr float64) {
	if a.stat == nil {
		p, stderr = a.compute()
		a.stat = &[2]float64{p, stderr}
	}
	return a.stat[0], a.stat[1]
}

func (a *acc) compute() (p, stderr float64) {
	if a.aggregate != nil {
		p = a.aggregate(a.values)
		if a.n > 1 {
			stderr = bootstrapStderr(a.aggregate, a.values, BootstrapIters)
		}
		return p, stderr
	}
	p = a.sum / float64(a.n)
	if a.n > 1 {
		stderr = math.Sqrt(max(0, (a.sumSq-float64(a.n)*p*p)/float64(a.n-1)) / float64(a.n))
	}
	return p, stderr
}

// tallies are the sums Aggregate reports from.
type tallies struct {
	counts     map[key]*acc
	order      []key
	primary    map[string]string   // task or group → its primary "metric,filter"
	groups     []string            // in the order first seen
	groupTasks map[string][]string // group → its tasks, in order
	perTask    map[string]int
	alias      map[string]string // task → its task_alias
	usage      evalflow.Usage
	samples    int
}

func tally(samples []Sample, configs map[string]task.GroupConfig) *tallies {
	t := &tallies{counts: map[key]*acc{}, primary: map[string]string{}, perTask: map[string]int{}, alias: map[string]string{},
		groupTasks: map[string][]string{}, samples: len(samples)}
	for _, s := range samples {
		t.perTask[s.Task]++
		t.usage.PromptTokens += s.Usage.PromptTokens
		t.usage.CompletionTokens += s.Usage.CompletionTokens
		// A task counts in its group and in each group above it (lm-eval's groups
		// aggregate their leaf tasks, however deep).
		for g, depth := s.Group, 0; g != "" && depth < maxDepth; g, depth = configs[g].Parent, depth+1 {
			if slices.Contains(t.groupTasks[g], s.Task) {
				continue
			}
			if t.groupTasks[g] == nil {
				t.groups = append(t.groups, g)
			}
			t.groupTasks[g] = append(t.groupTasks[g], s.Task)
		}
		for i, f := range s.Filters {
			metric := cmp.Or(f.Metric, s.Metric)
			k := key{s.Task, metric, f.Filter}
			if f.Values != nil { // a list-valued metric: each value counts alone
				for _, v := range f.Values {
					t.add(k, v)
				}
				t.counts[k].listed = true
			} else {
				t.add(k, f.Score())
			}
			if i == 0 {
				t.primary[s.Task] = metric + "," + f.Filter
			}
		}
		if aggs := configs[s.Group].Aggregates; len(aggs) > 0 {
			t.primary[s.Task] = aggs[0].Metric + "," + filtersOf(aggs[0])[0]
		}
	}
	return t
}

// maxDepth bounds how many groups a task is within.
const maxDepth = 8

// filtersOf are the filters an aggregate names ("none" when it names none).
func filtersOf(a task.GroupAggregate) []string {
	if len(a.Filters) == 0 {
		return []string{"none"}
	}
	return a.Filters
}

func (t *tallies) add(k key, v float64) {
	a, found := t.counts[k]
	if !found {
		a = &acc{aggregate: aggregations[k.metric]}
		t.counts[k] = a
		t.order = append(t.order, k)
	}
	if a.aggregate != nil {
		a.values = append(a.values, v)
	}
	a.n++
	a.sum += v
	a.sumSq += v * v
}

func header(run Run, t *tallies) *evalflow.Results {
	spec, u := run.Spec, t.usage
	return &evalflow.Results{
		Results:  map[string]map[string]any{},
		Groups:   map[string]map[string]any{},
		NSamples: map[string]evalflow.NSamples{},
		Config: map[string]any{"model": lmEvalModel(spec.Options.GenerationAPI), "model_args": "model=" + spec.Model.Name,
			"datasets": spec.Datasets, "engine": spec.Engine, "concurrency": run.Concurrency,
			// As lm-eval says how it built chat requests: through chat, with the
			// endpoint's own template, few-shot examples as turns or in one message.
			"apply_chat_template":  spec.Options.GenerationAPI != evalflow.GenerationCompletions,
			"fewshot_as_multiturn": spec.Options.GenerationAPI != evalflow.GenerationCompletions && spec.Options.FewshotAsMultiturn()},
		Summary: evalflow.Summary{Scores: map[string]float64{}, Metrics: map[string]string{}, Samples: t.samples,
			Errors: run.Errors, Concurrency: run.Concurrency, Usage: u,
			Cost: float64(u.PromptTokens)/1000*spec.Options.CostPer1KPromptTokens +
				float64(u.CompletionTokens)/1000*spec.Options.CostPer1KCompletionTokens},
	}
}

// lmEvalModel is lm-eval's name of the model type that asks as the run did.
func lmEvalModel(generationAPI string) string {
	if generationAPI == evalflow.GenerationCompletions {
		return "local-completions"
	}
	return "local-chat-completions"
}

// report writes task aggregate k into res: its mean and standard error, and the
// summary's score where k is the task's primary metric.
func (t *tallies) report(res *evalflow.Results, k key) {
	p, stderr := t.counts[k].stats()
	name := k.scope
	if res.Results[name] == nil {
		res.Results[name] = map[string]any{"alias": cmp.Or(t.alias[name], name)}
		n := t.perTask[name]
		res.NSamples[name] = evalflow.NSamples{Original: n, Effective: n}
	}
	setMetric(res.Results[name], k.metric, k.filter, p, stderr)
	if t.counts[k].listed {
		res.Results[name][k.metric+"_stderr,"+k.filter] = "N/A"
	}
	better(res, name, k.metric)
	if t.primary[name] == k.metric+","+k.filter {
		t.score(res, name, k.metric, p)
	}
}

func (t *tallies) score(res *evalflow.Results, name, metric string, p float64) {
	res.Summary.Scores[name] = p
	res.Summary.Metrics[name] = metric
	res.Summary.Metric = cmp.Or(res.Summary.Metric, metric)
}

// reportGroup writes group g into res as lm-eval's Group.aggregate does: each metric
// and filter its config names (else each its tasks have), the mean of its tasks'
// means weighted by their sizes (or not), and lm-eval's pooled_sample_stderr of their
// standard errors; the first is the summary's score.
func (t *tallies) reportGroup(res *evalflow.Results, g string, cfg task.GroupConfig) {
	type pair struct {
		metric, filter string
		weighted       bool
	}
	var pairs []pair
	for _, a := range cfg.Aggregates {
		for _, f := range filtersOf(a) {
			pairs = append(pairs, pair{a.Metric, f, a.WeightBySize})
		}
	}
	if cfg.Aggregates == nil {
		for _, k := range t.order {
			p := pair{k.metric, k.filter, true}
			if slices.Contains(t.groupTasks[g], k.scope) && !slices.Contains(pairs, p) {
				pairs = append(pairs, p)
			}
		}
	}
	out := map[string]any{"alias": cmp.Or(cfg.Alias, g), "name": g}
	res.Groups[g], res.Results[g] = out, out
	if cfg.Aggregates != nil && len(cfg.Aggregates) == 0 {
		return // a group that aggregates nothing is only its name, as lm-eval's
	}
	sampleLen := 0
	for _, task := range t.groupTasks[g] {
		sampleLen += t.perTask[task]
	}
	out["sample_len"] = sampleLen
	count := map[string]int{}
	for i, pr := range pairs {
		var sum, weights float64
		var stderrs []float64
		var sizes []int
		listed := false
		for _, task := range t.groupTasks[g] {
			a := t.counts[key{task, pr.metric, pr.filter}]
			if a == nil {
				continue
			}
			p, se := a.stats()
			n := t.perTask[task] // the task's sample_len
			w := 1.0
			if pr.weighted {
				w = float64(n)
			}
			sum, weights = sum+p*w, weights+w
			stderrs, sizes, listed = append(stderrs, se), append(sizes, n), listed || a.listed
		}
		if weights == 0 {
			continue
		}
		p := sum / weights
		setMetric(out, pr.metric, pr.filter, p, pooledStderr(stderrs, sizes))
		if listed { // a task's stderr is N/A: lm-eval's group's is too
			out[pr.metric+"_stderr,"+pr.filter] = "N/A"
		}
		for _, n := range sizes {
			count[pr.metric+","+pr.filter] += n
		}
		better(res, g, pr.metric)
		if i == 0 {
			t.score(res, g, pr.metric, p)
		}
	}
	if len(count) > 0 {
		out["sample_count"] = count
	}
	res.Results[g] = maps.Clone(out)
}

// pooledStderr is lm-eval's pooled_sample_stderr: the tasks' sample variances pooled
// (each (n-1)·stderr²·n), over N-k, then over N, square-rooted.
func pooledStderr(stderrs []float64, sizes []int) float64 {
	var num float64
	total := 0
	for i, se := range stderrs {
		num += float64(sizes[i]-1) * se * se * float64(sizes[i])
		total += sizes[i]
	}
	if total <= len(sizes) {
		return 0
	}
	return math.Sqrt(num / float64(total-len(sizes)) / float64(total))
}

// lowerIsBetter are lm-eval's metrics that are better lower.
var lowerIsBetter = map[string]bool{"perplexity": true, "word_perplexity": true, "byte_perplexity": true, "bits_per_byte": true, "ter": true}

// better records which way metric of name is better.
func better(res *evalflow.Results, name, metric string) {
	if res.HigherIsBetter == nil {
		res.HigherIsBetter = map[string]map[string]bool{}
	}
	if res.HigherIsBetter[name] == nil {
		res.HigherIsBetter[name] = map[string]bool{}
	}
	res.HigherIsBetter[name][metric] = !lowerIsBetter[metric]
}

func setMetric(m map[string]any, metric, filter string, p, stderr float64) {
	m[metric+","+filter] = p
	m[metric+"_stderr,"+filter] = stderr
}

// describe adds each task's config, version and n-shot, and n-samples.original: the
// size of its split before the limit.
func describe(res *evalflow.Results, tasks []task.Config) {
	for _, c := range tasks {
		b, err := json.Marshal(c)
		if err != nil {
			continue // a Config always marshals
		}
		if res.Configs == nil {
			res.Configs, res.Versions, res.NShot = map[string]json.RawMessage{}, map[string]any{}, map[string]any{}
		}
		res.Configs[c.Task], res.Versions[c.Task], res.NShot[c.Task] = b, c.Metadata.Version, c.NumFewshot
		if n, ok := res.NSamples[c.Task]; ok && c.Size > 0 {
			n.Original = c.Size
			res.NSamples[c.Task] = n
		}
	}
}
