package schema

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/pyrandom"
	"github.com/evalflow/evalflow/runner/task/pyre"
	"github.com/evalflow/evalflow/runner/task/tmpl"
	evalflow "github.com/evalflow/evalflow/shared"
)

// FewshotSeed is lm-eval's default --fewshot_random_seed.
const FewshotSeed = 1234

// Docs renders rows (the scored split's documents, in order) of a generate_until
// task as lm-eval asks them: the description, then num_fewshot examples (first_n, or
// lm-eval's default sampler: Random(FewshotSeed).sample, one draw a document in order,
// the document itself left out when the examples come from the scored split), each its
// doc_to_text, the target delimiter, its doc_to_target and the few-shot delimiter,
// then the document's doc_to_text: as text (completions) and as chat turns (the
// description a system message, each example a user and an assistant turn). pool is
// the few-shot split's rows (inline samples of fewshot_config take its place); idx
// picks which rows are scored (ascending; nil for all).
func (t *Task) Docs(rows, pool []map[string]any, sameSplit bool, idx []int) ([]task.Doc, error) {
	if !slices.Contains(OutputTypes, t.OutputType) {
		return nil, fmt.Errorf("task %s: output_type %q is not built here yet", t.Task, t.OutputType)
	}
	if idx == nil {
		idx = make([]int, len(rows))
		for i := range idx {
			idx[i] = i
		}
	}
	if f := t.ProcessDocs; f != nil && f.Func != "" {
		proc := docsProcessors[f.Func]
		if proc == nil {
			return nil, fmt.Errorf("task %s: process_docs %s has no Go processor", t.Task, f.Func)
		}
		rows = processed(rows, proc)
		pool = processed(pool, proc)
	}
	if t.DocToText != nil && t.DocToText.Func != "" {
		return t.multipleInput(rows, idx)
	}
	r, err := t.renderer()
	if err != nil {
		return nil, err
	}
	if t.FewshotConfig != nil && len(t.FewshotConfig.Samples) > 0 {
		pool, sameSplit = t.FewshotConfig.Samples, false
	}
	shots := 0
	if t.NumFewshot != nil {
		shots = *t.NumFewshot
	}
	available := len(pool)
	if sameSplit {
		available-- // the document itself is left out
	}
	if shots > 0 && shots > available {
		return nil, fmt.Errorf("task %s: num_fewshot %d: %d examples to draw from", t.Task, shots, len(pool))
	}
	draws := t.sampler(len(pool), shots, sameSplit)
	docs := make([]task.Doc, 0, len(idx))
	for _, i := range idx {
		d, err := r.doc(rows[i], i, pool, draws(i))
		if err != nil { // the same on every attempt: the run fails for good
			return nil, evalflow.Permanent(fmt.Errorf("task %s: document %d: %w", t.Task, i, err))
		}
		d.Task = t.Task
		docs = append(docs, d)
	}
	switch t.OutputType {
	case "multiple_choice":
		return t.choose(docs, rows, r)
	case "loglikelihood":
		return t.continuations(docs)
	}
	score, err := t.scorer()
	if err != nil {
		return nil, err
	}
	metric := "exact_match"
	if len(t.MetricList) > 0 {
		metric = t.MetricList[0].Metric.Text
	}
	if len(t.MetricList) > 0 && t.MetricList[0].Metric.Func == PassAtK {
		return t.programs(docs, rows, r)
	}
	temperature, topP := t.sampling()
	for n := range docs {
		d := &docs[n]
		d.Method, d.Metric, d.Stop, d.MaxTokens = task.Generate, metric, r.until, r.maxTokens
		d.Temperature, d.TopP = temperature, topP
		target, row := d.Target, rows[d.Index]
		d.Score = func(resp string) []task.Filtered { return score(resp, target, row) }
	}
	return docs, nil
}

// programs makes docs generate code that is scored by running it (pass@1): the
// response through the task's filter (HumanEval's: the prompt before it), then a
// line break and the target (the tests, and the call that runs them), as HF's
// code_eval joins them.
func (t *Task) programs(docs []task.Doc, rows []map[string]any, r *renderer) ([]task.Doc, error) {
	filter, steps := "none", []step(nil)
	if len(t.FilterList) > 0 {
		filter = t.FilterList[0].Name
		for _, st := range t.FilterList[0].Filter {
			s, err := filterStep(st)
			if err != nil {
				return nil, fmt.Errorf("task %s: filter %s: %w", t.Task, filter, err)
			}
			if s != nil {
				steps = append(steps, s)
			}
		}
	}
	ks := t.MetricList[0].K
	temperature, topP := t.sampling()
	for n := range docs {
		d := &docs[n]
		d.Method, d.Metric, d.Stop, d.MaxTokens = task.Generate, fmt.Sprintf("pass@%d", ks[0]), r.until, r.maxTokens
		d.Repeats, d.PassAtK, d.Temperature, d.TopP = max(1, t.Repeats), ks, temperature, topP
		target, row := d.Target, rows[d.Index]
		d.Program = func(resp string) task.Program {
			for _, s := range steps {
				resp = s(resp, row)
			}
			return task.Program{Code: resp + "\n" + target, Filter: filter}
		}
	}
	return docs, nil
}

// sampling is the temperature and top_p of t's generation_kwargs, as lm-eval's API
// models send them: temperature 0 unless given (do_sample itself is not sent).
func (t *Task) sampling() (temperature float64, topP *float64) {
	temperature = number(t.GenerationKwargs["temperature"])
	if v, ok := t.GenerationKwargs["top_p"]; ok {
		p := number(v)
		topP = &p
	}
	return temperature, topP
}

// number is a YAML number (0.2, or 1 read as an int) as a float64; 0 for none.
func number(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case int:
		return float64(n)
	}
	return 0
}

// choose makes docs multiple-choice requests, as lm-eval's: one log-likelihood a
// choice, of the target delimiter and the choice after the context; acc is the
// likeliest choice being the gold one, acc_norm the likeliest per character of the
// choice (lm-eval divides by len(choice)), ties going to the first.
func (t *Task) choose(docs []task.Doc, rows []map[string]any, r *renderer) ([]task.Doc, error) {
	metrics, err := t.choiceMetrics()
	if err != nil {
		return nil, err
	}
	var proc resultsProcessor
	if f := t.ProcessResults; f != nil && f.Func != "" {
		if proc = resultsProcessors[f.Func]; proc == nil {
			return nil, fmt.Errorf("task %s: process_results %s has no Go processor for multiple_choice", t.Task, f.Func)
		}
	}
	for n := range docs {
		d := &docs[n]
		choices, err := r.choicesOf(rows[d.Index])
		if err != nil {
			return nil, fmt.Errorf("task %s: document %d: %w", t.Task, d.Index, err)
		}
		gold := goldOf(d.Target, choices)
		d.Method, d.Metric, d.Messages = task.Loglikelihood, metrics[0], nil
		d.Choices = make([]string, len(choices))
		for i, c := range choices {
			d.Choices[i] = r.tgtDelim + c
		}
		if gold >= 0 {
			d.Target = choices[gold]
		}
		if proc != nil {
			row := rows[d.Index]
			d.ScoreChoices = func(lls []float64) []task.Filtered { return proc(row, lls, choices) }
			continue
		}
		d.ScoreChoices = scoreChoices(metrics, choices, gold)
	}
	return docs, nil
}

// continuations makes docs loglikelihood requests, as lm-eval's: the target (its own
// leading space, no delimiter added) after the context; acc is whether it is the
// greedy continuation, perplexity's sample its log-likelihood (aggregated as
// exp(-mean)). acc comes first: the summary's score.
func (t *Task) continuations(docs []task.Doc) ([]task.Doc, error) {
	var metrics []string
	for _, m := range t.MetricList {
		switch m.Metric.Text {
		case "acc":
			metrics = append([]string{"acc"}, metrics...)
		case "perplexity":
			metrics = append(metrics, "perplexity")
		default:
			return nil, fmt.Errorf("task %s: metric %q is not built for loglikelihood", t.Task, m.Metric.Text)
		}
	}
	if len(metrics) == 0 {
		metrics = []string{"acc", "perplexity"}
	}
	for n := range docs {
		d := &docs[n]
		d.Method, d.Metric, d.Messages, d.Choices = task.Loglikelihood, metrics[0], nil, []string{d.Target}
		d.ScoreContinuation = func(ll float64, greedy bool) []task.Filtered {
			out := make([]task.Filtered, len(metrics))
			for i, m := range metrics {
				out[i] = task.Filtered{Filter: "none", Metric: m, Correct: greedy}
				if m == "perplexity" {
					out[i].Value = &ll
				}
			}
			return out
		}
	}
	return docs, nil
}

// choiceMetrics are a multiple-choice task's metrics: acc and acc_norm.
func (t *Task) choiceMetrics() ([]string, error) {
	if len(t.MetricList) == 0 {
		return []string{"acc"}, nil
	}
	var metrics []string
	for _, m := range t.MetricList {
		if m.Metric.Text != "acc" && m.Metric.Text != "acc_norm" {
			return nil, fmt.Errorf("task %s: metric %q is not built for multiple_choice", t.Task, m.Metric.Text)
		}
		metrics = append(metrics, m.Metric.Text)
	}
	return metrics, nil
}

// scoreChoices scores the choices' log-likelihoods as lm-eval's process_results: acc
// the likeliest choice being the gold one, acc_norm the likeliest per character of the
// choice, ties going to the first.
func scoreChoices(metrics, choices []string, gold int) func([]float64) []task.Filtered {
	return func(lls []float64) []task.Filtered {
		pred, norm := argmax(lls, nil), argmax(lls, choices)
		out := make([]task.Filtered, len(metrics))
		for i, m := range metrics {
			p := map[string]int{"acc": pred, "acc_norm": norm}[m]
			out[i] = task.Filtered{Filter: "none", Metric: m, Correct: p == gold && gold >= 0}
			if p >= 0 {
				out[i].Extracted = choices[p]
			}
		}
		return out
	}
}

// multipleInput builds the documents of a task whose choices are its contexts
// (lm-eval's multiple input, winogrande's): doc_to_text gives the gold index,
// doc_to_choice the contexts, doc_to_target the continuation each is scored with
// (after the target delimiter), each context after the description.
func (t *Task) multipleInput(rows []map[string]any, idx []int) ([]task.Doc, error) {
	if t.OutputType != "multiple_choice" {
		return nil, fmt.Errorf("task %s: a !function doc_to_text is built for multiple_choice tasks only", t.Task)
	}
	if t.NumFewshot != nil && *t.NumFewshot > 0 {
		return nil, fmt.Errorf("task %s: few-shot examples of a task whose choices are its contexts are not built yet", t.Task)
	}
	metrics, err := t.choiceMetrics()
	if err != nil {
		return nil, err
	}
	fields := map[string]*Field{"doc_to_text": t.DocToText, "doc_to_target": t.DocToTarget, "doc_to_choice": t.DocToChoice}
	procs := map[string]docProcessor{}
	for name, f := range fields {
		if f == nil || docProcessors[f.Func] == nil {
			return nil, fmt.Errorf("task %s: %s must name a Go processor where doc_to_text does", t.Task, name)
		}
		procs[name] = docProcessors[f.Func]
	}
	delim := " "
	if t.TargetDelimiter != nil {
		delim = *t.TargetDelimiter
	}
	docs := make([]task.Doc, 0, len(idx))
	for _, i := range idx {
		d, err := t.multipleInputDoc(rows[i], i, procs, delim, metrics)
		if err != nil {
			return nil, fmt.Errorf("task %s: document %d: %w", t.Task, i, err)
		}
		docs = append(docs, d)
	}
	return docs, nil
}

func (t *Task) multipleInputDoc(row map[string]any, i int, procs map[string]docProcessor, delim string, metrics []string) (task.Doc, error) {
	g, err := procs["doc_to_text"](row)
	if err != nil {
		return task.Doc{}, err
	}
	target, err := procs["doc_to_target"](row)
	if err != nil {
		return task.Doc{}, err
	}
	c, err := procs["doc_to_choice"](row)
	if err != nil {
		return task.Doc{}, err
	}
	gold, _ := g.(int)
	contexts, _ := c.([]string)
	if gold < 0 || gold >= len(contexts) {
		return task.Doc{}, fmt.Errorf("gold %v is not one of %d contexts", g, len(contexts))
	}
	d := task.Doc{Task: t.Task, Index: i, Method: task.Loglikelihood, Metric: metrics[0], Target: contexts[gold]}
	for _, ctx := range contexts {
		d.Contexts = append(d.Contexts, t.Description+ctx)
		d.Choices = append(d.Choices, delim+fmt.Sprint(target))
	}
	d.Prompt = d.Contexts[gold]
	d.ScoreChoices = scoreChoices(metrics, contexts, gold)
	return d, nil
}

// goldOf is the gold choice's index: doc_to_target rendered as a number is the index
// (as lm-eval reads it), else the choice it names; -1 for neither.
func goldOf(target string, choices []string) int {
	if n, err := strconv.Atoi(target); err == nil && n >= 0 && strings.TrimSpace(target) == target {
		if n < len(choices) {
			return n
		}
		return -1
	}
	return slices.Index(choices, target)
}

// argmax is the first index of the largest log-likelihood, each divided by its
// choice's length in characters when choices are given (-Inf: unseen; -1 for none).
func argmax(lls []float64, choices []string) int {
	best, bestV := -1, math.Inf(-1)
	for i, v := range lls {
		if choices != nil {
			v /= float64(max(utf8.RuneCountInString(choices[i]), 1))
		}
		if !math.IsInf(v, -1) && (best < 0 || v > bestV) {
			best, bestV = i, v
		}
	}
	return best
}

// sampler gives the few-shot examples of document i: the first shots of the pool
// (first_n), or the draw lm-eval's default sampler makes for it. Documents are asked
// for in ascending order.
func (t *Task) sampler(size, shots int, sameSplit bool) func(i int) []int {
	if shots == 0 {
		return func(int) []int { return nil }
	}
	if t.FewshotConfig != nil && t.FewshotConfig.Sampler == "first_n" {
		return func(i int) []int {
			var out []int
			for j := 0; len(out) < shots; j++ {
				if !sameSplit || j != i {
					out = append(out, j)
				}
			}
			return out
		}
	}
	rnd, next := pyrandom.New(FewshotSeed), 0
	var draw []int
	return func(i int) []int {
		for ; next <= i; next++ {
			if sameSplit {
				draw = rnd.Sample(size, shots+1)
			} else {
				draw = rnd.Sample(size, shots)
			}
		}
		if !sameSplit {
			return draw
		}
		var out []int
		for _, j := range draw {
			if j != i && len(out) < shots {
				out = append(out, j)
			}
		}
		return out
	}
}

// renderer holds a task's compiled templates and settings.
type renderer struct {
	text, target       *tmpl.Template
	choice             *Field
	description        string
	tgtDelim, fewDelim string
	until              []string
	maxTokens          int
	examples           map[int]rendered // the pool's examples rendered so far
}

// delimiters are the task's target and few-shot delimiters (lm-eval's defaults " "
// and a blank line).
func (t *Task) delimiters() (target, fewshot string) {
	target, fewshot = " ", "\n\n"
	if t.TargetDelimiter != nil {
		target = *t.TargetDelimiter
	}
	if t.FewshotDelimiter != nil {
		fewshot = *t.FewshotDelimiter
	}
	return target, fewshot
}

// generation is how a generate_until task generates: until its stop sequences (the
// few-shot delimiter by default, as lm-eval's), up to max_gen_toks (256).
func (t *Task) generation() (until []string, maxTokens int) {
	_, fewshot := t.delimiters()
	if list, ok := t.GenerationKwargs["until"].([]any); ok {
		until = make([]string, 0, len(list))
		for _, u := range list {
			until = append(until, fmt.Sprint(u))
		}
	} else {
		until = []string{fewshot}
	}
	maxTokens = 256
	if n, ok := t.GenerationKwargs["max_gen_toks"].(int); ok {
		maxTokens = n
	}
	return until, maxTokens
}

func (t *Task) renderer() (*renderer, error) {
	r := &renderer{description: t.Description}
	r.tgtDelim, r.fewDelim = t.delimiters()
	r.until, r.maxTokens = t.generation()
	var err error
	if t.DocToText == nil || t.DocToTarget == nil || t.DocToText.Text == "" || t.DocToTarget.Func != "" {
		return nil, fmt.Errorf("task %s: doc_to_text must be a template, doc_to_target a template or a literal", t.Task)
	}
	if r.text, err = tmpl.Compile(t.DocToText.Text); err != nil {
		return nil, err
	}
	target := t.DocToTarget.Text
	if target == "" { // a literal: an index of doc_to_choice, or the target itself
		target = fmt.Sprint(t.DocToTarget.Literal)
	}
	if r.target, err = tmpl.Compile(target); err != nil {
		return nil, err
	}
	r.choice = t.DocToChoice
	return r, nil
}

// doc renders one document after its examples.
func (r *renderer) doc(row map[string]any, i int, pool []map[string]any, examples []int) (task.Doc, error) {
	var text strings.Builder
	var msgs []task.Message
	text.WriteString(r.description)
	if r.description != "" {
		msgs = append(msgs, task.Message{Role: "system", Content: r.description})
	}
	for _, e := range examples {
		ex, err := r.example(pool, e)
		if err != nil {
			return task.Doc{}, fmt.Errorf("few-shot example %d: %w", e, err)
		}
		text.WriteString(ex.q + r.tgtDelim + ex.a + r.fewDelim)
		msgs = append(msgs, task.Message{Role: "user", Content: ex.q}, task.Message{Role: "assistant", Content: ex.a})
	}
	q, err := r.text.RenderField(row)
	if err != nil {
		return task.Doc{}, err
	}
	target, err := r.target.RenderField(row)
	if err != nil {
		return task.Doc{}, err
	}
	text.WriteString(q)
	d := task.Doc{Index: i, Prompt: text.String(), Target: target}
	if len(examples) > 0 || r.description != "" {
		d.Messages = append(msgs, task.Message{Role: "user", Content: q})
	}
	return d, nil
}

// rendered is a few-shot example's question and answer.
type rendered struct{ q, a string }

// example renders example e of the pool once, however many documents show it.
func (r *renderer) example(pool []map[string]any, e int) (rendered, error) {
	if ex, ok := r.examples[e]; ok {
		return ex, nil
	}
	q, err := r.text.RenderField(pool[e])
	if err != nil {
		return rendered{}, err
	}
	a, err := r.target.RenderField(pool[e])
	if err != nil {
		return rendered{}, err
	}
	if r.choice != nil { // a multiple-choice example's answer is its gold choice
		choices, err := r.choicesOf(pool[e])
		if err != nil {
			return rendered{}, err
		}
		if g := goldOf(a, choices); g >= 0 {
			a = choices[g]
		}
	}
	if r.examples == nil {
		r.examples = map[int]rendered{}
	}
	r.examples[e] = rendered{q, a}
	return r.examples[e], nil
}

// processed are rows as process_docs gives them.
func processed(rows []map[string]any, proc docsProcessor) []map[string]any {
	if rows == nil {
		return nil
	}
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		out[i] = proc(r)
	}
	return out
}

// scorer applies the task's filters to a response, then exact_match with the first
// metric's options, as lm-eval scores a generate_until task; or the response to its
// process_results processor.
func (t *Task) scorer() (func(resp, target string, doc map[string]any) []task.Filtered, error) {
	if f := t.ProcessResults; f != nil && f.Func != "" {
		proc := generationProcessors[f.Func]
		if proc == nil {
			return nil, fmt.Errorf("task %s: process_results %s has no Go processor for generate_until", t.Task, f.Func)
		}
		return func(resp, _ string, doc map[string]any) []task.Filtered { return proc(doc, resp) }, nil
	}
	type chain struct {
		name  string
		steps []step
	}
	chains := []chain{{name: "none"}}
	if len(t.FilterList) > 0 {
		chains = nil
	}
	for _, f := range t.FilterList {
		c := chain{name: f.Name}
		for _, st := range f.Filter {
			s, err := filterStep(st)
			if err != nil {
				return nil, fmt.Errorf("task %s: filter %s: %w", t.Task, f.Name, err)
			}
			if s != nil {
				c.steps = append(c.steps, s)
			}
		}
		chains = append(chains, c)
	}
	match, err := t.exactMatch()
	if err != nil {
		return nil, err
	}
	return func(resp, target string, doc map[string]any) []task.Filtered {
		out := make([]task.Filtered, len(chains))
		for i, c := range chains {
			s := resp
			for _, f := range c.steps {
				s = f(s, doc)
			}
			out[i] = task.Filtered{Filter: c.name, Extracted: s, Correct: match(s, target)}
		}
		return out
	}, nil
}

// filterStep is one filter of a chain (nil for take_first: one response is its own
// first).
func filterStep(st FilterStep) (step, error) {
	if st.Function.Func != "" {
		p, ok := processors[st.Function.Func]
		if !ok {
			return nil, fmt.Errorf("!function %s has no Go processor", st.Function.Func)
		}
		return p(st)
	}
	plain := func(f func(string) string) step { return func(s string, _ map[string]any) string { return f(s) } }
	switch st.Function.Text {
	case "regex":
		re, err := pyre.Compile(cmp.Or(st.RegexPattern, defaultPattern))
		if err != nil {
			return nil, err
		}
		fallback, group := "[invalid]", st.GroupSelect
		if st.Fallback != nil {
			fallback = *st.Fallback
		}
		return plain(func(s string) string { return re.Extract(s, group, fallback) }), nil
	case "take_first":
		return nil, nil
	case "lowercase":
		return plain(strings.ToLower), nil
	case "uppercase":
		return plain(strings.ToUpper), nil
	case "remove_whitespace":
		return plain(pyre.Strip), nil
	case "custom":
		if f, ok := customFilters[st.FilterFn.Func]; ok {
			return f, nil
		}
		return nil, fmt.Errorf("custom filter %q has no Go processor", st.FilterFn.Func)
	}
	return nil, fmt.Errorf("filter %q is not built here", st.Function.Text)
}

// exactMatch is lm-eval's exact_match (Hugging Face evaluate's) with the first
// metric's options: each regex to ignore taken out of both, then case, then
// punctuation (Python's string.punctuation), then digits.
func (t *Task) exactMatch() (func(pred, ref string) bool, error) {
	var m Metric
	if len(t.MetricList) > 0 {
		m = t.MetricList[0]
	}
	if m.Metric.Text != "" && m.Metric.Text != "exact_match" {
		return nil, fmt.Errorf("task %s: metric %q is not built here", t.Task, m.Metric.Text)
	}
	var ignore []*pyre.Regex
	for _, s := range m.RegexesToIgnore {
		re, err := pyre.Compile(s)
		if err != nil {
			return nil, err
		}
		ignore = append(ignore, re)
	}
	norm := func(s string) string {
		for _, re := range ignore {
			s = re.RemoveAll(s)
		}
		if m.IgnoreCase {
			s = strings.ToLower(s)
		}
		if m.IgnorePunctuation {
			s = strings.Map(func(r rune) rune {
				if strings.ContainsRune("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", r) {
					return -1
				}
				return r
			}, s)
		}
		if m.IgnoreNumbers {
			s = strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return -1
				}
				return r
			}, s)
		}
		return s
	}
	return func(pred, ref string) bool { return norm(pred) == norm(ref) }, nil
}

// choicesOf is a document's choices: doc_to_choice's list as written, or its template
// rendered as a Python list (lm-eval reads it with ast.literal_eval).
func (r *renderer) choicesOf(row map[string]any) ([]string, error) {
	switch c := r.choice; {
	case c == nil:
		return nil, fmt.Errorf("doc_to_choice is required for multiple_choice")
	case c.Text != "":
		if list, ok := row[c.Text].([]any); ok { // a column of the documents: its list
			return stringsOf(list), nil
		}
		if expr, ok := soleExpression(c.Text); ok { // the list itself, as JSON: no repr to read back
			if tp, err := tmpl.Compile("{{ (" + expr + ") | tojson }}"); err == nil {
				if out, err := tp.Render(row); err == nil {
					var list []any
					if json.Unmarshal([]byte(out), &list) == nil {
						return stringsOf(list), nil
					}
				}
			}
		}
		tp, err := tmpl.Compile(c.Text)
		if err != nil {
			return nil, err
		}
		out, err := tp.Render(row)
		if err != nil {
			return nil, err
		}
		return pyStrings(out)
	default:
		list, ok := c.Literal.([]any)
		if !ok {
			return nil, fmt.Errorf("doc_to_choice is neither a list nor a template")
		}
		return stringsOf(list), nil
	}
}

func stringsOf(list []any) []string {
	out := make([]string, len(list))
	for i, v := range list {
		out[i] = fmt.Sprint(v)
	}
	return out
}

// soleExpression is EXPR of a template that is "{{ EXPR }}" alone.
func soleExpression(src string) (string, bool) {
	s := strings.TrimSpace(src)
	if !strings.HasPrefix(s, "{{") || !strings.HasSuffix(s, "}}") {
		return "", false
	}
	expr := s[2 : len(s)-2]
	if strings.Contains(expr, "{{") || strings.Contains(expr, "}}") || strings.Contains(expr, "{%") {
		return "", false
	}
	return strings.TrimSpace(expr), true
}

// Config is the task's config as results.json carries it.
func (t *Task) Config() task.Config {
	c := task.Config{Task: t.Task, TaskAlias: t.TaskAlias, DatasetPath: t.DatasetPath, DatasetName: t.DatasetName,
		TestSplit: t.TestSplit, ValidationSplit: t.ValidationSplit, FewshotSplit: t.FewshotSplit,
		OutputType: t.OutputType}
	if len(t.Tag) > 0 {
		c.Tag = t.Tag[0]
	}
	if t.NumFewshot != nil {
		c.NumFewshot = *t.NumFewshot
	}
	for _, m := range t.MetricList {
		c.MetricList = append(c.MetricList, task.MetricConfig{Metric: cmp.Or(m.Metric.Text, m.Metric.Func),
			Aggregation: cmp.Or(m.Aggregation.Text, m.Aggregation.Func, "mean"), HigherIsBetter: m.HigherIsBetter == nil || *m.HigherIsBetter,
			IgnoreCase: m.IgnoreCase, IgnorePunctuation: m.IgnorePunctuation, IgnoreNumbers: m.IgnoreNumbers, RegexesToIgnore: m.RegexesToIgnore})
	}
	for _, f := range t.FilterList {
		fc := task.FilterConfig{Name: f.Name}
		for _, st := range f.Filter {
			fc.Filter = append(fc.Filter, task.FilterStep{Function: cmp.Or(st.Function.Text, st.Function.Func),
				RegexPattern: st.RegexPattern, GroupSelect: st.GroupSelect})
		}
		c.FilterList = append(c.FilterList, fc)
	}
	switch v := t.Metadata["version"].(type) { // YAML's 3.0 or 3
	case float64:
		c.Metadata.Version = v
	case int:
		c.Metadata.Version = float64(v)
	}
	if t.OutputType == "generate_until" {
		until, maxTokens := t.generation()
		c.GenerationKwargs = &task.GenerationKwargs{Until: until, MaxGenToks: maxTokens}
		c.GenerationKwargs.Temperature, _ = t.GenerationKwargs["temperature"].(float64)
		c.GenerationKwargs.DoSample, _ = t.GenerationKwargs["do_sample"].(bool)
	}
	return c
}
