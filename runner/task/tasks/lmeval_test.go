package tasks_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/sandbox"
	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/schema"
	"github.com/evalflow/evalflow/runner/task/source"
	"github.com/evalflow/evalflow/runner/task/tasks"
)

// reference is what lm-eval asks of a task's documents: testdata/lmeval_bbh.json
// holds, for documents 0, 1 and the last of each of the 108 BBH tasks, the digests
// of the text prompt (local-completions), the chat turns with few-shot as multi-turn
// (--apply_chat_template) and as one user message (--fewshot_as_multiturn false),
// computed by CPython from lm-eval's own task files with its fewshot_context and
// build_qa_turn logic and Jinja2 in lm-eval's environment; and its until and
// max_gen_toks.
type reference struct {
	Docs map[string]struct {
		Text, Multiturn, Singleturn, Target string
	}
	Until      []string `json:"until"`
	MaxGenToks int      `json:"max_gen_toks"`
	Size       int      `json:"size"`
}

// Every BBH task of every form asks byte for byte what lm-eval asks.
func TestBBHAsksWhatLMEvalAsks(t *testing.T) {
	var refs map[string]reference
	readReference(t, "lmeval_bbh.json", &refs)
	if len(refs) != 108 {
		t.Fatalf("%d references", len(refs))
	}
	for name, ref := range refs {
		asksWhatLMEvalAsks(t, name, ref)
	}
}

// gsm8k (its five examples drawn as lm-eval's default sampler draws them, one draw a
// document in order), gsm8k_cot (eight fixed exemplars) and gsm8k_cot_zeroshot ask
// byte for byte what lm-eval asks (testdata/lmeval_gsm8k.json, hack/lmeval/gsm8k_ref.py),
// and their filters extract and score what lm-eval's do.
func TestGSM8KAsksAndScoresAsLMEval(t *testing.T) {
	var ref map[string]json.RawMessage
	readReference(t, "lmeval_gsm8k.json", &ref)
	for _, name := range []string{"gsm8k", "gsm8k_cot", "gsm8k_cot_zeroshot"} {
		var r reference
		if err := json.Unmarshal(ref[name], &r); err != nil {
			t.Fatal(err)
		}
		asksWhatLMEvalAsks(t, name, r)
	}
	var cases []filterCase
	if err := json.Unmarshal(ref["filters"], &cases); err != nil || len(cases) != 96 {
		t.Fatalf("%d filter cases, %v", len(cases), err)
	}
	extractsWhatLMEvalExtracts(t, cases)
}

// mmlu_<subject> (each letter's log-likelihood after the context) and
// mmlu_<subject>_generative ask byte for byte what lm-eval asks, 0- and 5-shot, for
// five subjects (testdata/lmeval_mmlu.json, hack/lmeval/mmlu_ref.py); and
// get_response reads and scores answers as lm-eval's filters and exact_match do.
func TestMMLUAsksAndScoresAsLMEval(t *testing.T) {
	var ref map[string]json.RawMessage
	readReference(t, "lmeval_mmlu.json", &ref)
	if len(ref) != 21 {
		t.Fatalf("%d references", len(ref))
	}
	for key, raw := range ref {
		name, at, ok := strings.Cut(key, "@")
		if !ok {
			continue
		}
		shots := int(at[0] - '0')
		if strings.HasSuffix(name, "_generative") {
			var r reference
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			asksWhatLMEvalAsks(t, name, r, shots)
			continue
		}
		var r choiceReference
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		asksChoicesAsLMEval(t, name, r, shots)
	}
	var cases []filterCase
	if err := json.Unmarshal(ref["filters"], &cases); err != nil || len(cases) != 150 {
		t.Fatalf("%d filter cases, %v", len(cases), err)
	}
	extractsWhatLMEvalExtracts(t, cases)
}

// asksWhatLMEvalAsks checks documents 0, 1 and the last of a shipped task against
// lm-eval's, asked alone and among every document before them (a sampler that draws
// a document's examples in order draws the same either way).
func asksWhatLMEvalAsks(t *testing.T, name string, ref reference, shots ...int) {
	t.Helper()
	tk, rows := shipped(t, name, shots...)
	if len(rows.Scored) != ref.Size {
		t.Errorf("%s: %d documents; lm-eval has %d", name, len(rows.Scored), ref.Size)
	}
	var idx []int
	for _, i := range []int{0, 1, ref.Size - 1} {
		if !slices.Contains(idx, i) {
			idx = append(idx, i)
		}
	}
	alone, err := tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, idx)
	if err != nil {
		t.Fatal(err)
	}
	every, err := tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range idx {
		alone = append(alone, every[i])
	}
	for _, d := range alone {
		want := ref.Docs[itoa(d.Index)]
		if got := sum(d.Prompt); got != want.Text {
			t.Errorf("%s doc %d: text prompt %s; lm-eval's %s\n%s", name, d.Index, got[:12], want.Text[:12], d.Prompt)
		}
		if got := turns(d.Turns(true)); got != want.Multiturn {
			t.Errorf("%s doc %d: multi-turn chat differs from lm-eval's: %q", name, d.Index, d.Turns(true))
		}
		if got := turns(d.Turns(false)); got != want.Singleturn {
			t.Errorf("%s doc %d: single-turn chat differs from lm-eval's: %q", name, d.Index, d.Turns(false))
		}
		if d.Target != want.Target {
			t.Errorf("%s doc %d: target %q; lm-eval's %q", name, d.Index, d.Target, want.Target)
		}
		if !slices.Equal(d.Stop, ref.Until) || d.MaxTokens != ref.MaxGenToks {
			t.Errorf("%s: until %q, max tokens %d; lm-eval's %q, %d", name, d.Stop, d.MaxTokens, ref.Until, ref.MaxGenToks)
		}
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func sum(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

// turns digests messages as the reference does: role, NUL, content, 0x01, each.
func turns(ms []task.Message) string {
	h := sha256.New()
	for _, m := range ms {
		h.Write([]byte(m.Role + "\x00" + m.Content + "\x01"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Every BBH filter extracts and scores what lm-eval's does: testdata/lmeval_bbh_filters.json
// holds what lm-eval's own filters (RegexFilter, TakeFirstFilter, and the classes of
// its BBH utils.py, run as they are by CPython) extract from 1,112 responses to
// documents of each zero-shot task, and whether exact_match with the task's options
// takes it (word2number's path is held apart, in the schema package's tests).
func TestBBHFiltersExtractWhatLMEvalsExtract(t *testing.T) {
	var cases []filterCase
	readReference(t, "lmeval_bbh_filters.json", &cases)
	extractsWhatLMEvalExtracts(t, cases)
}

// A filterCase is a response to a document of a task, and what each of the task's
// filters extracts from it and whether exact_match takes that, in lm-eval.
type filterCase struct {
	Task     string
	Doc      int
	Response string
	Filters  map[string][2]any
}

// extractsWhatLMEvalExtracts runs each case's response through the shipped task's
// filters and exact_match.
func extractsWhatLMEvalExtracts(t *testing.T, cases []filterCase) {
	t.Helper()
	docs := map[string][]task.Doc{}
	for _, k := range cases {
		if docs[k.Task] == nil {
			tk, rows := shipped(t, k.Task)
			var err error
			if docs[k.Task], err = tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, []int{0, 1, 7}); err != nil {
				t.Fatal(err)
			}
		}
		i := slices.IndexFunc(docs[k.Task], func(d task.Doc) bool { return d.Index == k.Doc })
		got := map[string]task.Filtered{}
		for _, f := range docs[k.Task][i].Score(k.Response) {
			got[f.Filter] = f
		}
		for name, want := range k.Filters {
			if g := got[name]; g.Extracted != want[0] || g.Correct != want[1] {
				t.Errorf("%s doc %d %q: %s gives %q (correct %v); lm-eval's %q (%v)", k.Task, k.Doc, k.Response, name, g.Extracted, g.Correct, want[0], want[1])
			}
		}
	}
}

// truthfulqa_mc1 and _mc2 ask what lm-eval asks: for documents 0, 1 and the last, the
// context and each choice's continuation (the target delimiter and the choice) equal
// what CPython renders from lm-eval's task files on the rows the hub's truthful_qa
// builds from mc_task.json (hack/lmeval/mc_ref.py); the first choice is the gold.
func TestTruthfulQAMultipleChoiceAsksWhatLMEvalAsks(t *testing.T) {
	var refs map[string]choiceReference
	readReference(t, "lmeval_truthfulqa.json", &refs)
	for name, ref := range refs {
		asksChoicesAsLMEval(t, name, ref)
	}
}

// choiceReference is what lm-eval asks of a multiple-choice task's documents: the
// digests of each one's context and of its continuations (NUL apart), how many, and
// the gold one.
type choiceReference struct {
	Docs map[string]struct {
		Context, Continuations string
		N, Gold                int
	}
	Size int
}

// asksChoicesAsLMEval checks documents 0, 1 and the last of a shipped multiple-choice
// task against lm-eval's.
func asksChoicesAsLMEval(t *testing.T, name string, ref choiceReference, shots ...int) {
	t.Helper()
	tk, rows := shipped(t, name, shots...)
	docs, err := tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, []int{0, 1, ref.Size - 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		want := ref.Docs[itoa(d.Index)]
		if sum(d.Prompt) != want.Context {
			t.Errorf("%s doc %d: context differs from lm-eval's:\n%s", name, d.Index, d.Prompt)
		}
		if len(d.Choices) != want.N || sum(strings.Join(d.Choices, "\x00")) != want.Continuations {
			t.Errorf("%s doc %d: continuations %q differ from lm-eval's", name, d.Index, d.Choices)
		}
		if d.Method != task.Loglikelihood || " "+d.Target != d.Choices[want.Gold] {
			t.Errorf("%s doc %d: asked by %s, target %q; want the log-likelihood of choice %d", name, d.Index, d.Method, d.Target, want.Gold)
		}
	}
}

// truthfulqa_mc2 scores a question by its normalised probability mass on the true
// answers; mc1 by whether the likeliest choice is the first.
func TestTruthfulQAScoresAsLMEval(t *testing.T) {
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	row := map[string]any{"question": "Q?",
		"mc1_targets": map[string]any{"choices": []any{"a", "b", "c"}, "labels": []any{1, 0, 0}},
		"mc2_targets": map[string]any{"choices": []any{"a", "b", "c"}, "labels": []any{1, 1, 0}}}
	lls := []float64{math.Log(0.2), math.Log(0.1), math.Log(0.5)} // probabilities 0.2, 0.1, 0.5
	mc2, err := c.Task("truthfulqa_mc2").Docs([]map[string]any{row}, nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := mc2[0].ScoreChoices(lls)
	if len(f) != 1 || f[0].Value == nil || math.Abs(*f[0].Value-0.3/0.8) > 1e-12 || f[0].Metric != "acc" || f[0].Extracted != "c" {
		t.Errorf("mc2: %+v; want acc 0.375 (0.3 of 0.8), the likeliest c", f)
	}
	// Far below exp's range the mass is still the ratio lm-eval means.
	if f := mc2[0].ScoreChoices([]float64{-2000, -2000 + math.Log(3), -3000}); math.Abs(*f[0].Value-1) > 1e-12 {
		t.Errorf("mc2 far down: %v", *f[0].Value)
	}
	mc1, err := c.Task("truthfulqa_mc1").Docs([]map[string]any{row}, nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := mc1[0].ScoreChoices(lls); f[0].Correct || f[0].Metric != "acc" {
		t.Errorf("mc1 with c likeliest: %+v", f)
	}
	if f := mc1[0].ScoreChoices([]float64{-1, -2, -3}); !f[0].Correct {
		t.Errorf("mc1 with a likeliest: %+v", f)
	}
}

// winogrande asks what lm-eval asks: each option's context (the sentence up to its
// blank, the option in it) and the same continuation after each, the gold the answer's
// option; as CPython gives them from lm-eval's preprocess_winogrande.py run as it is
// (hack/lmeval/winogrande_ref.py).
func TestWinograndeAsksWhatLMEvalAsks(t *testing.T) {
	var ref struct {
		Docs map[string]struct {
			Contexts, Continuation string
			Gold                   int
		}
		Size int
	}
	readReference(t, "lmeval_winogrande.json", &ref)
	tk, rows := shipped(t, "winogrande")
	if len(rows.Scored) != ref.Size {
		t.Fatalf("%d documents; lm-eval's validation split has %d", len(rows.Scored), ref.Size)
	}
	docs, err := tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, []int{0, 1, 100, ref.Size - 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		want := ref.Docs[itoa(d.Index)]
		if sum(strings.Join(d.Contexts, "\x00")) != want.Contexts {
			t.Errorf("doc %d: contexts %q differ from lm-eval's", d.Index, d.Contexts)
		}
		if len(d.Choices) != 2 || d.Choices[0] != want.Continuation || d.Choices[1] != want.Continuation {
			t.Errorf("doc %d: continuations %q; lm-eval's %q after each", d.Index, d.Choices, want.Continuation)
		}
		f := d.ScoreChoices([]float64{-1, -2})
		if f[0].Correct != (want.Gold == 0) || d.Target != d.Contexts[want.Gold] {
			t.Errorf("doc %d: the first context likelier scores %v; the gold is %d", d.Index, f[0].Correct, want.Gold)
		}
	}
	tk2 := *tk
	two := 2
	tk2.NumFewshot = &two
	if _, err := source.Read(filepath.Join(testserver.SharedDir(t), "datasets"), &tk2); err == nil || !strings.Contains(err.Error(), "train") {
		t.Errorf("a few-shot winogrande: %v; want an error naming the missing train split", err)
	}
}

// lambada_openai asks, for every one of its 5,153 passages, the context and the
// continuation lm-eval asks (CPython rendering lm-eval's task file,
// hack/lmeval/lambada_ref.py), as one loglikelihood request: acc whether the last
// word is the greedy continuation, perplexity's sample its log-likelihood.
func TestLambadaAsksWhatLMEvalAsks(t *testing.T) {
	var ref struct {
		Size                    int
		Contexts, Continuations string
	}
	readReference(t, "lmeval_lambada.json", &ref)
	tk, rows := shipped(t, "lambada_openai")
	docs, err := tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cont := sha256.New(), sha256.New()
	for _, d := range docs {
		ctx.Write([]byte(d.Prompt + "\x00"))
		cont.Write([]byte(d.Choices[0] + "\x00"))
	}
	if len(docs) != ref.Size || hex.EncodeToString(ctx.Sum(nil)) != ref.Contexts || hex.EncodeToString(cont.Sum(nil)) != ref.Continuations {
		t.Errorf("%d passages; their contexts or continuations differ from lm-eval's (first: %q + %q)", len(docs), docs[0].Prompt, docs[0].Choices)
	}
	f := docs[0].ScoreContinuation(-1.5, true)
	if len(f) != 2 || f[0].Metric != "acc" || !f[0].Correct || f[1].Metric != "perplexity" || *f[1].Value != -1.5 || docs[0].Method != task.Loglikelihood {
		t.Errorf("scores %+v", f)
	}
	if f := docs[0].ScoreContinuation(-0.5, false); f[0].Correct {
		t.Errorf("a continuation that is not the greedy one scores acc: %+v", f)
	}
}

// readReference reads a testdata reference file into v.
func readReference(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// shipped is a shipped task and its documents, read from ../shared; asked with shots
// examples when given.
func shipped(t *testing.T, name string, shots ...int) (*schema.Task, source.Rows) {
	t.Helper()
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	tk := c.Task(name)
	if tk == nil {
		t.Fatalf("%s is not shipped", name)
	}
	if len(shots) > 0 {
		own := *tk
		own.NumFewshot = &shots[0]
		tk = &own
	}
	rows, err := source.Read(filepath.Join(testserver.SharedDir(t), "datasets"), tk)
	if err != nil {
		t.Fatal(err)
	}
	return tk, rows
}

// truthfulqa_gen asks what lm-eval asks: the context (the QA prompt, then the
// question, no "A:"), cut at a blank line, up to 256 tokens; its documents processed as
// lm-eval's process_docs_gen (run as it is by CPython, hack/lmeval/gen_ref.py), and
// scored by BLEU and ROUGE against those answers.
func TestTruthfulQAGenerationAsksWhatLMEvalAsks(t *testing.T) {
	var ref struct {
		Docs map[string]struct {
			Context            string
			Correct, Incorrect []string
		}
		Size  int
		Until []string
	}
	readReference(t, "lmeval_truthfulqa_gen.json", &ref)
	tk, rows := shipped(t, "truthfulqa_gen")
	docs, err := tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, []int{0, 1, ref.Size - 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		want := ref.Docs[itoa(d.Index)]
		if sum(d.Prompt) != want.Context || !slices.Equal(d.Stop, ref.Until) || d.MaxTokens != 256 || d.Method != task.Generate {
			t.Errorf("doc %d: %q until %q, %d tokens, %s; differs from lm-eval's", d.Index, d.Prompt, d.Stop, d.MaxTokens, d.Method)
		}
		longest := slices.MaxFunc(want.Correct, func(a, b string) int { return len(a) - len(b) }) // BLEU needs 4-grams
		scores := map[string]task.Filtered{}
		for _, f := range d.Score(" " + longest) {
			scores[f.Metric] = f
		}
		if len(scores) != 12 || *scores["rouge1_max"].Value != 100 || *scores["rouge1_acc"].Value != 1 || *scores["bleu_acc"].Value != 1 {
			t.Errorf("doc %d: a true answer scores ROUGE-1 %v (acc %v), BLEU acc %v of %d metrics; want 100, 1, 1 of 12",
				d.Index, *scores["rouge1_max"].Value, *scores["rouge1_acc"].Value, *scores["bleu_acc"].Value, len(scores))
		}
		scores = map[string]task.Filtered{}
		for _, f := range d.Score(want.Incorrect[0]) {
			scores[f.Metric] = f
		}
		if *scores["bleu_acc"].Value != 0 || *scores["bleu_diff"].Value >= 0 {
			t.Errorf("doc %d: a false answer scores bleu_acc %v, bleu_diff %v", d.Index, *scores["bleu_acc"].Value, *scores["bleu_diff"].Value)
		}
	}
}

// ifeval asks each prompt as it is (lm-eval's doc_to_text: prompt names the column),
// with no stop sequence and up to 1,280 tokens, and scores a response by the
// prompt's instructions: prompt 1000 asks for three highlighted sections and no
// commas, among others.
func TestIFEvalAsksThePromptAndScoresItsInstructions(t *testing.T) {
	tk, rows := shipped(t, "ifeval")
	if len(rows.Scored) != 541 {
		t.Fatalf("%d prompts", len(rows.Scored))
	}
	docs, err := tk.Docs(rows.Scored, nil, false, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	d := docs[0]
	if d.Prompt != rows.Scored[0]["prompt"] || len(d.Stop) != 0 || d.MaxTokens != 1280 || len(d.Turns(true)) != 1 {
		t.Fatalf("doc 0: prompt %.60q, until %q, max tokens %d, %d turns", d.Prompt, d.Stop, d.MaxTokens, len(d.Turns(true)))
	}
	// Prompt 1000: no commas, 3 highlighted sections, at least 300 words. This
	// follows the first two only.
	got := map[string]string{}
	for _, f := range d.Score("*one* *two* *three* and no commas anywhere") {
		got[f.Metric] = fmt.Sprint(f.Correct, f.Values)
	}
	want := map[string]string{"prompt_level_strict_acc": "false []", "inst_level_strict_acc": "false [1 1 0]",
		"prompt_level_loose_acc": "false []", "inst_level_loose_acc": "false [1 1 0]"}
	if !maps.Equal(got, want) {
		t.Errorf("scores %v; want %v", got, want)
	}
}

// humaneval asks each problem's signature and docstring as they are, until the next
// top-level statement, up to 1,024 tokens; a completion makes a program (the prompt,
// the completion, the tests, check(entry_point)) that passes in the sandbox when the
// completion is the canonical solution, and fails when it is not.
func TestHumanEvalAsksThePromptAndItsCanonicalSolutionsPass(t *testing.T) {
	tk, rows := shipped(t, "humaneval")
	docs, err := tk.Docs(rows.Scored, nil, false, []int{0, 1, 2, 3, 4, 163})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sandbox.NewLocal(sandbox.DefaultLimits, 2)
	if err != nil {
		if os.Getenv("EVALFLOW_REQUIRE_SERVERS") != "" {
			t.Fatal(err)
		}
		t.Skipf("skipped: %v", err)
	}
	for _, d := range docs {
		row := rows.Scored[d.Index]
		if d.Prompt != row["prompt"] || d.MaxTokens != 1024 || strings.Join(d.Stop, "|") != "\nclass|\ndef|\n#|\nif|\nprint" || d.Program == nil {
			t.Fatalf("%s/%d: prompt %.40q, max tokens %d, until %q", d.Task, d.Index, d.Prompt, d.MaxTokens, d.Stop)
		}
		p := d.Program(row["canonical_solution"].(string))
		want := row["prompt"].(string) + row["canonical_solution"].(string) + "\n" + row["test"].(string) + "\ncheck(" + row["entry_point"].(string) + ")"
		if p.Code != want || p.Filter != "create_test" || d.Metric != "pass@1" || d.Repeats != 1 || d.Temperature != 0 || d.TopP != nil {
			t.Errorf("%s/%d: program %.80q (%s, %s), %d repeats at temperature %v", d.Task, d.Index, p.Code, p.Filter, d.Metric, d.Repeats, d.Temperature)
		}
		if r, err := s.Run(context.Background(), p.Code); err != nil || !r.Passed {
			t.Errorf("%s/%d: the canonical solution %s", d.Task, d.Index, r.Outcome)
		}
		if r, err := s.Run(context.Background(), d.Program("    return None\n").Code); err != nil || r.Passed || !strings.HasPrefix(r.Outcome, "failed: ") {
			t.Errorf("%s/%d: a wrong solution: %+v", d.Task, d.Index, r)
		}
	}
}
