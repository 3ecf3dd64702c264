package results

import (
	"cmp"
	"encoding/json"
	"math"
	"strings"

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
}

// Aggregate computes lm-eval style results: each metric per task and filter with its
// standard error ("exact_match,<filter>"), per group (mmlu) the mean weighted by task
// size, and each task's config, version and n-shot. The summary's score of a task is
// its primary filter's.
func Aggregate(run Run, samples []Sample) *evalflow.Results {
	t := tally(samples)
	res := header(run, t)
	for _, k := range t.order {
		t.report(res, k)
	}
	describe(res, run.Tasks)
	return res
}

// key names one aggregate: a task or "group:<name>", a metric and a filter.
type key struct{ scope, metric, filter string }

type acc struct {
	n          int
	sum, sumSq float64
}

// tallies are the sums Aggregate reports from.
type tallies struct {
	counts  map[key]*acc
	order   []key
	primary map[string]string // scope → its primary "metric,filter"
	perTask map[string]int
	usage   evalflow.Usage
	samples int
}

func tally(samples []Sample) *tallies {
	t := &tallies{counts: map[key]*acc{}, primary: map[string]string{}, perTask: map[string]int{}, samples: len(samples)}
	for _, s := range samples {
		t.perTask[s.Task]++
		t.usage.PromptTokens += s.Usage.PromptTokens
		t.usage.CompletionTokens += s.Usage.CompletionTokens
		scopes := []string{s.Task}
		if s.Group != "" {
			scopes = append(scopes, "group:"+s.Group)
		}
		for i, f := range s.Filters {
			metric := cmp.Or(f.Metric, s.Metric)
			for _, scope := range scopes {
				t.add(key{scope, metric, f.Filter}, f.Score())
				if i == 0 {
					t.primary[scope] = metric + "," + f.Filter
				}
			}
		}
	}
	return t
}

func (t *tallies) add(k key, v float64) {
	a, found := t.counts[k]
	if !found {
		a = &acc{}
		t.counts[k] = a
		t.order = append(t.order, k)
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

// report writes aggregate k into res: its mean and standard error, and the summary's
// score where k is its scope's primary metric.
func (t *tallies) report(res *evalflow.Results, k key) {
	a := t.counts[k]
	p := a.sum / float64(a.n)
	stderr := 0.0
	if a.n > 1 { // the sample standard deviation over sqrt(n), as lm-eval's mean_stderr
		stderr = math.Sqrt(max(0, (a.sumSq-float64(a.n)*p*p)/float64(a.n-1)) / float64(a.n))
	}
	name, isGroup := strings.CutPrefix(k.scope, "group:")
	if isGroup {
		if res.Groups[name] == nil {
			res.Groups[name] = map[string]any{"alias": name}
		}
		setMetric(res.Groups[name], k.metric, k.filter, p, stderr)
	}
	if res.Results[name] == nil {
		res.Results[name] = map[string]any{"alias": strings.TrimPrefix(name, "mmlu_")}
		if !isGroup {
			n := t.perTask[name]
			res.NSamples[name] = evalflow.NSamples{Original: n, Effective: n}
		}
	}
	setMetric(res.Results[name], k.metric, k.filter, p, stderr)
	if t.primary[k.scope] == k.metric+","+k.filter {
		res.Summary.Scores[name] = p
		res.Summary.Metrics[name] = k.metric
		res.Summary.Metric = cmp.Or(res.Summary.Metric, k.metric)
	}
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
