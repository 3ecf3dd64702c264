package tasks_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/task"
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
	data := filepath.Join(testserver.SharedDir(t), "datasets")
	b, err := os.ReadFile("testdata/lmeval_bbh.json")
	if err != nil {
		t.Fatal(err)
	}
	var refs map[string]reference
	if err := json.Unmarshal(b, &refs); err != nil {
		t.Fatal(err)
	}
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 108 {
		t.Fatalf("%d references", len(refs))
	}
	for name, ref := range refs {
		tk := c.Task(name)
		if tk == nil {
			t.Errorf("%s is not shipped", name)
			continue
		}
		rows, err := source.Read(data, tk)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows.Scored) != ref.Size {
			t.Errorf("%s: %d documents; lm-eval has %d", name, len(rows.Scored), ref.Size)
		}
		var idx []int
		for _, i := range []int{0, 1, ref.Size - 1} {
			if !slices.Contains(idx, i) {
				idx = append(idx, i)
			}
		}
		docs, err := tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, idx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
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
	data := filepath.Join(testserver.SharedDir(t), "datasets")
	b, err := os.ReadFile("testdata/lmeval_bbh_filters.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Task     string
		Doc      int
		Response string
		Filters  map[string][2]any
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string][]task.Doc{}
	for _, k := range cases {
		tk := c.Task(k.Task)
		if docs[k.Task] == nil {
			rows, err := source.Read(data, tk)
			if err != nil {
				t.Fatal(err)
			}
			if docs[k.Task], err = tk.Docs(rows.Scored, rows.Pool, rows.SameSplit, nil); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]task.Filtered{}
		for _, f := range docs[k.Task][k.Doc].Score(k.Response) {
			got[f.Filter] = f
		}
		for name, want := range k.Filters {
			if g := got[name]; g.Extracted != want[0] || g.Correct != want[1] {
				t.Errorf("%s doc %d %q: %s gives %q (correct %v); lm-eval's %q (%v)", k.Task, k.Doc, k.Response, name, g.Extracted, g.Correct, want[0], want[1])
			}
		}
	}
}
