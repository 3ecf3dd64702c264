package evalflow

import (
	"math"
	"slices"
)

// SignificanceTest names the test Compare applies, as pages and tables show it.
const SignificanceTest = "McNemar's exact test (two-sided) on the samples both runs scored, paired by task and document; significant at p < 0.05"

// significanceLevel is the p-value under which a difference is significant.
const significanceLevel = 0.05

// MaxCompared bounds the runs one comparison takes.
const MaxCompared = 8

// Scored is one run's results, as Compare takes them.
type Scored struct {
	RunID   string
	Model   string
	Results *Results
	Samples *Samples
}

// Comparison sets runs side by side, task by task, each run after the first against
// the first.
type Comparison struct {
	Runs  []ComparedRun `json:"runs"`
	Test  string        `json:"test"`
	Tasks []TaskDiff    `json:"tasks"`
	// Disagreements are samples on which the runs' correctness differs (the first
	// MaxDisagreements of DisagreementsTotal, by task and document).
	Disagreements      []Disagreement `json:"disagreements"`
	DisagreementsTotal int            `json:"disagreements_total"`
}

// ComparedRun names a compared run.
type ComparedRun struct {
	RunID string `json:"run_id"`
	Model string `json:"model"`
}

// TaskDiff is one task (or group) across the runs.
type TaskDiff struct {
	Task   string `json:"task"`
	Group  bool   `json:"group,omitempty"`
	Metric string `json:"metric"`
	// Scores has one entry a run, nil where the run did not score the task.
	Scores []*TaskScore `json:"scores"`
	// Diffs has one entry a run after the first (against the first), nil where either
	// did not score the task.
	Diffs []*Difference `json:"diffs"`
}

// Difference is how a run differs from the first on a task.
type Difference struct {
	Delta float64 `json:"delta"` // its score minus the first's
	// Paired is how many samples both scored; OnlyFirst how many of those only the
	// first got right, OnlyThis how many only this run got right.
	Paired      int     `json:"paired"`
	OnlyFirst   int     `json:"only_first"`
	OnlyThis    int     `json:"only_this"`
	PValue      float64 `json:"p_value"`
	Significant bool    `json:"significant"`
}

// Disagreement is a sample the runs scored differently.
type Disagreement struct {
	Task    string   `json:"task"`
	DocID   int      `json:"doc_id"`
	Prompt  string   `json:"prompt"`
	Target  string   `json:"target"`
	Answers []Answer `json:"answers"` // one a run, in the comparison's order
}

// Answer is what one run answered to a sample.
type Answer struct {
	Extracted string `json:"extracted"`
	Correct   bool   `json:"correct"`
}

// MaxDisagreements bounds the disagreements a Comparison lists.
const MaxDisagreements = 500

// Compare sets runs side by side (at least one; the first is the baseline).
func Compare(runs []Scored) Comparison {
	c := Comparison{Test: SignificanceTest, Tasks: []TaskDiff{}, Disagreements: []Disagreement{}}
	byRun := make([]map[string]TaskScore, len(runs))
	var names []TaskScore
	seen := map[string]bool{}
	for i, r := range runs {
		c.Runs = append(c.Runs, ComparedRun{RunID: r.RunID, Model: r.Model})
		byRun[i] = map[string]TaskScore{}
		for _, s := range r.Results.Scores() {
			byRun[i][s.Task] = s
			if !seen[s.Task] {
				seen[s.Task] = true
				names = append(names, s)
			}
		}
	}
	slices.SortFunc(names, tasksThenGroups)
	for _, n := range names {
		d := TaskDiff{Task: n.Task, Group: n.Group, Metric: n.Metric}
		for i := range runs {
			var s *TaskScore
			if v, ok := byRun[i][n.Task]; ok {
				s = &v
			}
			d.Scores = append(d.Scores, s)
			if i == 0 {
				continue
			}
			var diff *Difference
			if d.Scores[0] != nil && s != nil {
				diff = paired(runs[0].Samples, runs[i].Samples, n.Task)
				diff.Delta = s.Value - d.Scores[0].Value
			}
			d.Diffs = append(d.Diffs, diff)
		}
		c.Tasks = append(c.Tasks, d)
	}
	c.Disagreements, c.DisagreementsTotal = disagreements(runs)
	return c
}

// paired counts, over the samples of task (or group) both a and b scored, those only
// one of them got right, and tests the difference.
func paired(a, b *Samples, task string) *Difference {
	d := &Difference{}
	for _, x := range a.list {
		if x.Task != task && x.Group != task {
			continue
		}
		y, ok := b.find(x.Task, x.DocID)
		if !ok {
			continue
		}
		d.Paired++
		switch {
		case x.Correct && !y.Correct:
			d.OnlyFirst++
		case !x.Correct && y.Correct:
			d.OnlyThis++
		}
	}
	d.PValue = McNemar(d.OnlyFirst, d.OnlyThis)
	d.Significant = d.PValue < significanceLevel
	return d
}

// disagreements lists the samples of the first run that every run scored and on
// which their correctness differs.
func disagreements(runs []Scored) ([]Disagreement, int) {
	out, total := []Disagreement{}, 0
	if len(runs) < 2 {
		return out, 0
	}
	for _, x := range runs[0].Samples.list {
		answers := []Answer{{Extracted: x.Extracted, Correct: x.Correct}}
		differ := false
		for _, r := range runs[1:] {
			y, ok := r.Samples.find(x.Task, x.DocID)
			if !ok {
				break
			}
			answers = append(answers, Answer{Extracted: y.Extracted, Correct: y.Correct})
			differ = differ || y.Correct != x.Correct
		}
		if len(answers) != len(runs) || !differ {
			continue
		}
		total++
		if len(out) < MaxDisagreements {
			out = append(out, Disagreement{Task: x.Task, DocID: x.DocID, Prompt: x.Prompt, Target: x.Target, Answers: answers})
		}
	}
	return out, total
}

// McNemar is the two-sided exact McNemar p-value of b discordant pairs one way and c
// the other: twice the binomial(b+c, 1/2) tail at min(b, c), at most 1.
func McNemar(b, c int) float64 {
	n := b + c
	if n == 0 {
		return 1
	}
	k := min(b, c)
	// Sum the tail in log space: C(n, i) / 2^n overflows a float64 from n ≈ 1030.
	lgN, _ := math.Lgamma(float64(n + 1))
	logHalf := float64(n) * math.Log(0.5)
	terms := make([]float64, 0, k+1)
	peak := math.Inf(-1)
	for i := 0; i <= k; i++ {
		lgI, _ := math.Lgamma(float64(i + 1))
		lgNI, _ := math.Lgamma(float64(n - i + 1))
		t := lgN - lgI - lgNI + logHalf
		terms = append(terms, t)
		peak = max(peak, t)
	}
	sum := 0.0
	for _, t := range terms {
		sum += math.Exp(t - peak)
	}
	return min(1, 2*math.Exp(peak+math.Log(sum)))
}
