package tmpl_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/runner/task/tmpl"
)

// testdata/jinja2.json holds what Python's Jinja2 (3.1.6, in lm-eval's environment:
// StrictUndefined, keep_trailing_newline) renders for lm-eval's own task templates
// (gsm8k, lambada_openai, truthfulqa_mc1 read from its YAML, mmlu, bbh) and the Python
// methods task templates use, on the first document of each dataset in ../shared.
// Made once with python3 -c 'import jinja2, yaml ...' (the script is in the commit
// that added it); the Go side must render each byte for byte.
func TestTemplatesRenderAsJinja2Does(t *testing.T) {
	b, err := os.ReadFile("testdata/jinja2.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name, Template, Want string
		Doc                  map[string]any
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 15 {
		t.Fatalf("%d cases: the fixture proves little", len(cases))
	}
	for _, c := range cases {
		tp, err := tmpl.Compile(c.Template)
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		got, err := tp.Render(c.Doc)
		if err != nil || got != c.Want {
			t.Errorf("%s: rendered %q (%v);\nJinja2 renders %q", c.Name, got, err, c.Want)
		}
	}
}

// A template that names what the document lacks, or asks for a substring that is not
// there, fails (as lm-eval's StrictUndefined and Python's str.index do) rather than
// render a wrong prompt; one that does not parse fails to compile.
func TestATemplateFailsRatherThanRenderWrong(t *testing.T) {
	for _, src := range []string{"{{ missing }}", "{{ sentence[:sentence.index('#')] }}", "{{ [1, 2].index(3) }}"} {
		tp, err := tmpl.Compile(src)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if got, err := tp.Render(map[string]any{"sentence": "no hash"}); err == nil {
			t.Errorf("%q rendered %q; want an error", src, got)
		}
	}
	if _, err := tmpl.Compile("{{ unclosed "); err == nil || !strings.Contains(err.Error(), "unclosed") {
		t.Errorf("an unparsable template: %v; want an error quoting it", err)
	}
}

// Rendering every BBH document's question (6,511, as bbh_zeroshot asks them).
func BenchmarkRenderBBH(b *testing.B) {
	dir := os.Getenv("EVALFLOW_SHARED_DIR")
	files, _ := filepath.Glob(filepath.Join(dir, "datasets", "bbh", "*.json"))
	if len(files) == 0 {
		b.Skip("no BBH data: set EVALFLOW_SHARED_DIR (../shared/DATA.md)")
	}
	var docs []map[string]any
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		var d struct{ Examples []map[string]any }
		json.Unmarshal(raw, &d)
		docs = append(docs, d.Examples...)
	}
	tp, err := tmpl.Compile("Q: {{input}}\nA:")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(docs)), "docs/op")
	for b.Loop() {
		for _, d := range docs {
			if _, err := tp.Render(d); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// A field that names one of the document's columns is its value, as lm-eval reads
// doc_to_target: answer; any other text is a template.
func TestAFieldNamingAColumnIsItsValue(t *testing.T) {
	for _, c := range []struct {
		src  string
		doc  map[string]any
		want string
	}{
		{"answer", map[string]any{"answer": 2}, "2"},
		{"answer", map[string]any{"question": "q"}, "answer"},
		{"question", map[string]any{"question": "Why?"}, "Why?"},
		{"{{answer}}!", map[string]any{"answer": 1}, "1!"},
	} {
		tp, err := tmpl.Compile(c.src)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.RenderField(c.doc); err != nil || got != c.want {
			t.Errorf("%q of %v: %q, %v; want %q", c.src, c.doc, got, err, c.want)
		}
	}
}
