package evalflow

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/big"
	"reflect"
	"slices"
	"testing"
)

// mcnemarExact is the same p-value in exact rational arithmetic.
func mcnemarExact(b, c int) float64 {
	n := b + c
	sum := new(big.Int)
	for i := 0; i <= min(b, c); i++ {
		sum.Add(sum, new(big.Int).Binomial(int64(n), int64(i)))
	}
	p := new(big.Rat).SetFrac(new(big.Int).Mul(sum, big.NewInt(2)), new(big.Int).Lsh(big.NewInt(1), uint(n)))
	f, _ := p.Float64()
	return math.Min(f, 1)
}

func TestMcNemarMatchesExactArithmetic(t *testing.T) {
	if got := McNemar(1, 9); math.Abs(got-0.021484375) > 1e-12 {
		t.Errorf("McNemar(1, 9) = %v, want 0.021484375 (2·11/1024)", got)
	}
	if McNemar(0, 0) != 1 || McNemar(5, 5) != 1 {
		t.Errorf("no discordant pairs, or as many each way: p must be 1, got %v and %v", McNemar(0, 0), McNemar(5, 5))
	}
	for _, bc := range [][2]int{{0, 6}, {3, 17}, {40, 60}, {100, 150}, {600, 700}, {2000, 2100}} {
		got, want := McNemar(bc[0], bc[1]), mcnemarExact(bc[0], bc[1])
		if math.Abs(got-want) > 1e-9*math.Max(want, 1e-300) && math.Abs(got-want) > 1e-15 {
			t.Errorf("McNemar(%d, %d) = %g, exact %g", bc[0], bc[1], got, want)
		}
		if McNemar(bc[1], bc[0]) != got {
			t.Errorf("McNemar(%d, %d) is not symmetric", bc[0], bc[1])
		}
	}
}

// scoredRun builds a run of mmlu tasks from answers: task -> correct per document.
func scoredRun(t *testing.T, id string, answers map[string][]bool) Scored {
	t.Helper()
	var lines []string
	res := &Results{Results: map[string]map[string]any{}, Groups: map[string]map[string]any{"mmlu": {}},
		NSamples: map[string]NSamples{}, Summary: Summary{Scores: map[string]float64{}, Metric: "exact_match"}}
	all, right := 0, 0
	for _, task := range slices.Sorted(maps.Keys(answers)) {
		docs := answers[task]
		n := 0
		for doc, ok := range docs {
			b, _ := json.Marshal(Sample{Task: task, Group: "mmlu", DocID: doc, Prompt: fmt.Sprintf("Question %d of %s", doc, task),
				Response: " B", Extracted: map[bool]string{true: "A", false: "B"}[ok], Target: "A", Correct: ok})
			lines = append(lines, string(b))
			if ok {
				n++
			}
		}
		all, right = all+len(docs), right+n
		v := float64(n) / float64(len(docs))
		res.Results[task] = map[string]any{"exact_match,none": v, "exact_match_stderr,none": 0.01}
		res.Summary.Scores[task] = v
		res.NSamples[task] = NSamples{Original: len(docs), Effective: len(docs)}
	}
	res.Summary.Scores["mmlu"] = float64(right) / float64(all)
	res.Groups["mmlu"] = map[string]any{"exact_match,none": res.Summary.Scores["mmlu"], "exact_match_stderr,none": 0.02}
	res.Results["mmlu"] = res.Groups["mmlu"]
	return Scored{RunID: id, Model: "model-" + id, Results: res, Samples: samplesOf(t, lines...)}
}

func repeat(v bool, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestCompareFindsTheSignificantTaskAndTheDisagreements(t *testing.T) {
	// astronomy: A right on all 20, B on 4 (16 discordant one way: significant).
	// marketing: A and B each right on 10 of 20, on different documents half the time
	// (5 each way: not significant).
	mk := func(first, second []bool) []bool { return append(append([]bool{}, first...), second...) }
	a := scoredRun(t, "a", map[string][]bool{
		"mmlu_astronomy": repeat(true, 20),
		"mmlu_marketing": mk(mk(repeat(true, 5), repeat(true, 5)), mk(repeat(false, 5), repeat(false, 5))),
	})
	b := scoredRun(t, "b", map[string][]bool{
		"mmlu_astronomy": mk(repeat(true, 4), repeat(false, 16)),
		"mmlu_marketing": mk(mk(repeat(true, 5), repeat(false, 5)), mk(repeat(true, 5), repeat(false, 5))),
	})
	c := Compare([]Scored{a, b})
	if len(c.Tasks) != 3 || c.Tasks[0].Task != "mmlu_astronomy" || c.Tasks[1].Task != "mmlu_marketing" || c.Tasks[2].Task != "mmlu" || !c.Tasks[2].Group {
		t.Fatalf("tasks: %+v; want astronomy, marketing, then the mmlu group", c.Tasks)
	}
	astro, mkt, group := c.Tasks[0].Diffs[0], c.Tasks[1].Diffs[0], c.Tasks[2].Diffs[0]
	if astro.Paired != 20 || astro.OnlyFirst != 16 || astro.OnlyThis != 0 || !astro.Significant || math.Abs(astro.Delta+0.8) > 1e-9 {
		t.Errorf("astronomy: %+v; want 20 paired, 16 only A, delta -0.8, significant", astro)
	}
	if mkt.OnlyFirst != 5 || mkt.OnlyThis != 5 || mkt.Significant || mkt.PValue != 1 || mkt.Delta != 0 {
		t.Errorf("marketing: %+v; want 5 each way, p 1, not significant", mkt)
	}
	if group.Paired != 40 || group.OnlyFirst != 21 || group.OnlyThis != 5 || !group.Significant {
		t.Errorf("mmlu group: %+v; want all 40 paired, 21 only A, 5 only B", group)
	}
	if c.Tasks[0].Scores[0].Stderr != 0.01 || c.Tasks[2].Scores[1].Stderr != 0.02 {
		t.Errorf("standard errors not carried: %+v / %+v", c.Tasks[0].Scores[0], c.Tasks[2].Scores[1])
	}
	if c.DisagreementsTotal != 26 || len(c.Disagreements) != 26 {
		t.Fatalf("disagreements: %d listed of %d; want 26", len(c.Disagreements), c.DisagreementsTotal)
	}
	d := c.Disagreements[0]
	if d.Task != "mmlu_astronomy" || d.DocID != 4 || !d.Answers[0].Correct || d.Answers[1].Correct || d.Answers[1].Extracted != "B" {
		t.Errorf("first disagreement: %+v", d)
	}
	b.Samples = b.Samples.Compact() // as the results API holds every run after the first
	if compacted := Compare([]Scored{a, b}); !reflect.DeepEqual(compacted, c) {
		t.Errorf("compared with the second run compacted: %+v; want %+v", compacted, c)
	}
	if b.Samples.list[0].Prompt != "" {
		t.Errorf("a compacted sample keeps its prompt")
	}
}

func TestCompareAcrossRunsOfDifferentTasks(t *testing.T) {
	a := scoredRun(t, "a", map[string][]bool{"mmlu_astronomy": repeat(true, 4)})
	b := scoredRun(t, "b", map[string][]bool{"mmlu_marketing": repeat(false, 4)})
	c := Compare([]Scored{a, b})
	for _, td := range c.Tasks {
		switch td.Task {
		case "mmlu_astronomy":
			if td.Scores[0] == nil || td.Scores[1] != nil || td.Diffs[0] != nil {
				t.Errorf("astronomy, scored by a only: %+v", td)
			}
		case "mmlu_marketing":
			if td.Scores[0] != nil || td.Scores[1] == nil || td.Diffs[0] != nil {
				t.Errorf("marketing, scored by b only: %+v", td)
			}
		case "mmlu":
			if td.Diffs[0] == nil || td.Diffs[0].Paired != 0 || td.Diffs[0].PValue != 1 {
				t.Errorf("mmlu group with no shared sample: %+v", td.Diffs[0])
			}
		}
	}
	if c.DisagreementsTotal != 0 {
		t.Errorf("no shared sample, yet %d disagreements", c.DisagreementsTotal)
	}
}

func TestSamplesQuery(t *testing.T) {
	run := scoredRun(t, "a", map[string][]bool{
		"mmlu_astronomy": {true, false, true, false, true},
		"mmlu_marketing": {false, false, true},
	})
	s := run.Samples
	wrong, right := false, true
	for _, c := range []struct {
		name    string
		q       SampleQuery
		matched int
		first   string
	}{
		{"everything", SampleQuery{}, 8, "mmlu_astronomy/0"},
		{"one task", SampleQuery{Task: "mmlu_marketing"}, 3, "mmlu_marketing/0"},
		{"a group", SampleQuery{Task: "mmlu"}, 8, "mmlu_astronomy/0"},
		{"wrong ones", SampleQuery{Correct: &wrong}, 4, "mmlu_astronomy/1"},
		{"right ones of a task", SampleQuery{Task: "mmlu_marketing", Correct: &right}, 1, "mmlu_marketing/2"},
		{"text, any case", SampleQuery{Text: "QUESTION 2 OF MMLU_M"}, 1, "mmlu_marketing/2"},
		{"a page", SampleQuery{Offset: 6, Limit: 1}, 8, "mmlu_marketing/1"},
		{"nothing", SampleQuery{Text: "no such words"}, 0, ""},
	} {
		p := s.Query(c.q)
		first := ""
		if len(p.Samples) > 0 {
			first = fmt.Sprintf("%s/%d", p.Samples[0].Task, p.Samples[0].DocID)
		}
		if p.Total != 8 || p.Matched != c.matched || first != c.first {
			t.Errorf("%s: total %d, matched %d, first %q; want 8, %d, %q", c.name, p.Total, p.Matched, first, c.matched, c.first)
		}
		if len(p.Tasks) != 2 || p.Tasks[0] != (TaskCount{Task: "mmlu_astronomy", Samples: 5, Correct: 3}) {
			t.Errorf("%s: tasks %+v", c.name, p.Tasks)
		}
	}
	if err := (SampleQuery{Limit: MaxSamplePage + 1}).Validate(); ErrorField(err) != "limit" {
		t.Errorf("a page too long: %v, want an error naming limit", err)
	}
}

func TestScoresPickTheFilterThatGaveTheScore(t *testing.T) {
	res := &Results{
		Results: map[string]map[string]any{"gsm8k": {
			"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.05,
			"exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": 0.06,
		}},
		NSamples: map[string]NSamples{"gsm8k": {Original: 1319, Effective: 80}},
		Summary:  Summary{Scores: map[string]float64{"gsm8k": 0.5}, Metrics: map[string]string{"gsm8k": "exact_match"}},
	}
	got := res.Scores()
	want := TaskScore{Task: "gsm8k", Metric: "exact_match", Filter: "flexible-extract", Value: 0.5, Stderr: 0.06, Samples: 80}
	if len(got) != 1 || got[0] != want {
		t.Errorf("Scores() = %+v, want %+v", got, want)
	}
}

// samplesOf is the samples of samples.jsonl's lines.
func samplesOf(t *testing.T, lines ...string) *Samples {
	t.Helper()
	list := make([]Sample, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &list[i]); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
	}
	return NewSamples(list)
}
