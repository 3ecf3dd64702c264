package results_test

import (
	"math"
	"testing"

	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/task"
	evalflow "github.com/evalflow/evalflow/shared"
)

// sample is one scored document: strict and flexible right or wrong.
func sample(taskName, group string, doc int, strict, flexible bool) results.Sample {
	return results.Sample{Sample: evalflow.Sample{Task: taskName, Group: group, DocID: doc, Metric: "exact_match"},
		Filters: []task.Filtered{{Filter: "strict-match", Correct: strict}, {Filter: "flexible-extract", Correct: flexible}}}
}

// A group aggregates as lm-eval's Group.aggregate: only the metric and filter its
// aggregate_metric_list names, its tasks' means weighted by size, lm-eval's
// pooled_sample_stderr; its tasks' and its own summary score are that filter's.
func TestAGroupAggregatesAsLMEval(t *testing.T) {
	// a: flexible 1,1,0 (mean 2/3); b: flexible 1,0 (mean 1/2); strict all wrong.
	samples := []results.Sample{
		sample("a", "g", 0, false, true), sample("a", "g", 1, false, true), sample("a", "g", 2, false, false),
		sample("b", "g", 0, false, true), sample("b", "g", 1, false, false),
	}
	cfg := task.GroupConfig{Aggregates: []task.GroupAggregate{{Metric: "exact_match", Filters: []string{"flexible-extract"}, WeightBySize: true}}}
	res := results.Aggregate(results.Run{Groups: map[string]task.GroupConfig{"g": cfg}}, samples)
	g := res.Groups["g"]
	// lm-eval: (2/3·3 + 1/2·2)/5 = 0.6; stderrs sqrt(s²/n): a s²=1/3, b s²=1/2;
	// pooled var = ((3-1)·(1/3) + (2-1)·(1/2)) / (5-2) = 7/18; stderr = sqrt(7/18/5).
	want, wantSE := 0.6, math.Sqrt(7.0/18/5)
	if v, _ := g["exact_match,flexible-extract"].(float64); math.Abs(v-want) > 1e-12 {
		t.Errorf("group mean %v; want %v", g["exact_match,flexible-extract"], want)
	}
	if v, _ := g["exact_match_stderr,flexible-extract"].(float64); math.Abs(v-wantSE) > 1e-12 {
		t.Errorf("group stderr %v; want %v", v, wantSE)
	}
	if _, ok := g["exact_match,strict-match"]; ok {
		t.Errorf("the group reports strict-match, which its config does not aggregate: %v", g)
	}
	if g["sample_len"] != 5 || g["alias"] != "g" {
		t.Errorf("group %v", g)
	}
	if res.Summary.Scores["g"] != want || res.Summary.Scores["a"] != 2.0/3 || res.Summary.Scores["b"] != 0.5 {
		t.Errorf("summary scores %v; want the flexible-extract means", res.Summary.Scores)
	}
	// Unweighted, the mean is the tasks' means' mean.
	cfg.Aggregates[0].WeightBySize = false
	res = results.Aggregate(results.Run{Groups: map[string]task.GroupConfig{"g": cfg}}, samples)
	if v := res.Groups["g"]["exact_match,flexible-extract"].(float64); math.Abs(v-(2.0/3+0.5)/2) > 1e-12 {
		t.Errorf("unweighted mean %v", v)
	}
	// A group without a config (mmlu) reports every metric and filter, weighted.
	res = results.Aggregate(results.Run{}, samples)
	if v, ok := res.Groups["g"]["exact_match,strict-match"].(float64); !ok || v != 0 {
		t.Errorf("a group without config: %v", res.Groups["g"])
	}
	if res.Summary.Scores["a"] != 0 {
		t.Errorf("without a config a task's primary is its first filter: %v", res.Summary.Scores)
	}
}

// Nested groups aggregate as today's lm-eval's: each group over all its leaf tasks,
// however deep (mmlu over the 57 subjects, not over its four categories' means), each
// with its alias and its sample_count; a group that aggregates nothing is only its name.
func TestNestedGroupsEachAggregateTheirLeafTasks(t *testing.T) {
	// a (in stem): flexible 1,1,0; b (in other): 1,0; c (in empty, nothing aggregated): 1.
	samples := []results.Sample{
		sample("a", "stem", 0, false, true), sample("a", "stem", 1, false, true), sample("a", "stem", 2, false, false),
		sample("b", "other", 0, false, true), sample("b", "other", 1, false, false), sample("c", "empty", 0, true, true),
	}
	flexible := []task.GroupAggregate{{Metric: "exact_match", Filters: []string{"flexible-extract"}, WeightBySize: true}}
	groups := map[string]task.GroupConfig{
		"top":   {Name: "top", Alias: "all of it", Aggregates: flexible},
		"stem":  {Name: "stem", Parent: "top", Aggregates: flexible},
		"other": {Name: "other", Parent: "top", Aggregates: flexible},
		"empty": {Name: "empty", Parent: "top", Aggregates: []task.GroupAggregate{}},
	}
	res := results.Aggregate(results.Run{Groups: groups}, samples)
	top := res.Groups["top"]
	// lm-eval over the leaves a, b, c: (2/3·3 + 1/2·2 + 1·1)/6 = 2/3; pooled over the
	// three leaves: ((3-1)·(1/3) + (2-1)·(1/2) + 0) / (6-3) = 7/18, over 6. (Pooled over
	// the groups' stderrs it would differ.)
	if v, _ := top["exact_match,flexible-extract"].(float64); math.Abs(v-2.0/3) > 1e-12 {
		t.Errorf("top's mean %v; want 2/3 over its leaf tasks", top["exact_match,flexible-extract"])
	}
	if v, _ := top["exact_match_stderr,flexible-extract"].(float64); math.Abs(v-math.Sqrt(7.0/18/6)) > 1e-12 {
		t.Errorf("top's stderr %v; want sqrt(7/18/6), pooled over its leaf tasks", v)
	}
	if top["sample_len"] != 6 || top["alias"] != "all of it" || top["sample_count"].(map[string]int)["exact_match,flexible-extract"] != 6 {
		t.Errorf("top %v", top)
	}
	if v, _ := res.Groups["stem"]["exact_match,flexible-extract"].(float64); math.Abs(v-2.0/3) > 1e-12 || res.Groups["stem"]["sample_len"] != 3 {
		t.Errorf("stem %v; want its one task's", res.Groups["stem"])
	}
	if e := res.Groups["empty"]; len(e) != 2 || e["name"] != "empty" || e["alias"] != "empty" {
		t.Errorf("a group that aggregates nothing: %v; want its name and alias only", e)
	}
	if res.Summary.Scores["a"] != 2.0/3 || res.Summary.Scores["c"] != 1 {
		t.Errorf("summary %v", res.Summary.Scores)
	}
}

// A list-valued metric (IFEval's instruction-level accuracy) aggregates as lm-eval's
// agg_inst_level_acc: the mean of every value of every sample, its stderr "N/A".
func TestAListValuedMetricCountsEachValue(t *testing.T) {
	inst := func(vs ...float64) task.Filtered {
		return task.Filtered{Filter: "none", Metric: "inst_level_strict_acc", Values: vs}
	}
	samples := []results.Sample{
		{Sample: evalflow.Sample{Task: "ifeval", DocID: 0}, Filters: []task.Filtered{{Filter: "none", Metric: "prompt_level_strict_acc"}, inst(1, 0, 1)}},
		{Sample: evalflow.Sample{Task: "ifeval", DocID: 1}, Filters: []task.Filtered{{Filter: "none", Metric: "prompt_level_strict_acc", Correct: true}, inst(1)}},
	}
	r := results.Aggregate(results.Run{}, samples).Results["ifeval"]
	if r["inst_level_strict_acc,none"] != 0.75 || r["inst_level_strict_acc_stderr,none"] != "N/A" {
		t.Errorf("instruction level %v ± %v; want 3/4 of the instructions, N/A", r["inst_level_strict_acc,none"], r["inst_level_strict_acc_stderr,none"])
	}
	if r["prompt_level_strict_acc,none"] != 0.5 {
		t.Errorf("prompt level %v; want 1/2", r["prompt_level_strict_acc,none"])
	}
}

// perplexity aggregates as lm-eval's: exp(-mean) of the log-likelihoods, its standard
// error bootstrapped as lm-eval's bootstrap_stderr (100,000 resamples, chunk i drawn
// by Random(i)): the values CPython 3.11 gives running lm-eval's logic on the same 50
// log-likelihoods.
func TestPerplexityAggregatesAsLMEval(t *testing.T) {
	var samples []results.Sample
	for i := range 50 {
		ll := -float64(i%7)*0.37 - 0.5 - float64(i%3)*0.11
		samples = append(samples, results.Sample{Sample: evalflow.Sample{Task: "lambada", DocID: i, Metric: "acc"},
			Filters: []task.Filtered{{Filter: "none", Metric: "acc", Correct: i%2 == 0}, {Filter: "none", Metric: "perplexity", Value: &ll}}})
	}
	res := results.Aggregate(results.Run{}, samples)
	r := res.Results["lambada"]
	if v := r["perplexity,none"].(float64); math.Abs(v-5.449914933384306) > 1e-12 {
		t.Errorf("perplexity %v; lm-eval's 5.449914933384306", v)
	}
	if v := r["perplexity_stderr,none"].(float64); math.Abs(v-0.5874981458880768) > 1e-12 {
		t.Errorf("perplexity stderr %v; lm-eval's 0.5874981458880768", v)
	}
	if hib := res.HigherIsBetter["lambada"]; hib["perplexity"] || !hib["acc"] {
		t.Errorf("higher_is_better %v", hib)
	}
	if v := r["acc,none"].(float64); v != 0.5 || res.Summary.Scores["lambada"] != 0.5 {
		t.Errorf("acc %v, summary %v", v, res.Summary.Scores)
	}
}
