package ifeval

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/evalflow/evalflow/devkit/testserver"
)

// reference is what lm-eval's own checkers (run as they are by CPython,
// hack/lmeval/ifeval_ref.py) say of 13 responses to each of the 541 prompts, and what
// the Python models they lean on say of each prompt.
type reference struct {
	Cases []struct {
		Key           int
		Response      string
		Strict, Loose []bool
	}
	Models []struct {
		Key               int
		Sentences, Words  int
		CapitalWords      int `json:"capital_words"`
		CapitalWordsUpper int `json:"capital_words_upper"`
		Language          string
	}
}

func readReference(t *testing.T) (reference, map[int]doc) {
	t.Helper()
	f, err := os.Open("testdata/lmeval_ifeval.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	dec := json.NewDecoder(z)
	if err := dec.Decode(&ref); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(testserver.SharedDir(t), "datasets", "ifeval", "input_data.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	docs := map[int]doc{}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var d doc
		if err := json.Unmarshal(line, &d); err != nil {
			t.Fatal(err)
		}
		docs[d.Key] = d
	}
	return ref, docs
}

// doc is one IFEval prompt.
type doc struct {
	Key          int              `json:"key"`
	Prompt       string           `json:"prompt"`
	Instructions []string         `json:"instruction_id_list"`
	Kwargs       []map[string]any `json:"kwargs"`
}

// modelled are the instructions whose checkers lean on a Python model lm-eval has and
// evalflow replaces: they may differ, by as much as docs/tasks.md says.
var modelled = []string{"language:response_language", "change_case:english_capital", "change_case:english_lowercase",
	"length_constraints:number_sentences", "change_case:capital_word_frequency"}

// randomLetter are the prompts whose letter is not one of a to z ("#", "!"): lm-eval
// checks a letter drawn at random instead, evalflow the one the prompt asks for.
var randomLetter = map[int]bool{1122: true, 1129: true}

// Every checker says of 7,033 responses what lm-eval's says, strictly and loosely,
// instruction by instruction; those that lean on a model, nearly always. Each
// instruction is both followed and not followed among them.
func TestEachCheckerSaysWhatLMEvalsSays(t *testing.T) {
	ref, docs := readReference(t)
	if len(ref.Cases) != 7033 || len(docs) != 541 {
		t.Fatalf("%d cases, %d prompts", len(ref.Cases), len(docs))
	}
	seen := map[string][2]bool{}
	differ, asked := map[string]int{}, map[string]int{}
	for _, c := range ref.Cases {
		d := docs[c.Key]
		p, err := Build(d.Instructions, d.Kwargs)
		if err != nil {
			t.Fatalf("prompt %d: %v", c.Key, err)
		}
		strict, loose := p.Strict(c.Response), p.Loose(c.Response)
		for i, id := range d.Instructions {
			s := seen[id]
			s[boolIndex(c.Strict[i])] = true
			seen[id] = s
			asked[id]++
			if strict[i] == c.Strict[i] && loose[i] == c.Loose[i] {
				continue
			}
			differ[id]++
			if !slices.Contains(modelled, id) && !(randomLetter[c.Key] && id == "keywords:letter_frequency") {
				t.Errorf("prompt %d, %s, response %.80q: strict %v loose %v; lm-eval's %v %v", c.Key, id, c.Response, strict[i], loose[i], c.Strict[i], c.Loose[i])
			}
		}
	}
	for _, id := range Instructions() {
		if s := seen[id]; !s[0] || !s[1] {
			t.Errorf("%s is never %v in the reference: its checker is not held both ways", id, map[bool]string{true: "followed", false: "broken"}[!s[1]])
		}
	}
	for _, id := range modelled {
		t.Logf("%s: %d of %d checks differ from lm-eval's", id, differ[id], asked[id])
		if differ[id]*20 > asked[id] {
			t.Errorf("%s: %d of %d checks differ from lm-eval's: more than 5%%", id, differ[id], asked[id])
		}
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// On the 541 prompts themselves: words are counted as lm-eval counts them; the
// sentence splitter, word tokenizer and language detector that stand in for nltk's and
// langdetect agree with them as often as docs/tasks.md says.
func TestTheStandInsAgreeWithLMEvalsModels(t *testing.T) {
	ref, docs := readReference(t)
	var sentences, capitals, language, total int
	for _, m := range ref.Models {
		p := docs[m.Key].Prompt
		if got := countWords(p); got != m.Words {
			t.Errorf("prompt %d: %d words; lm-eval counts %d", m.Key, got, m.Words)
		}
		total++
		if countSentences(p) == m.Sentences {
			sentences++
		}
		if capitalWords(p) == m.CapitalWords && capitalWords(pyUpper(p)) == m.CapitalWordsUpper {
			capitals++
		}
		if got, _ := detectLanguage(p); got == m.Language {
			language++
		}
	}
	t.Logf("of %d prompts: sentences counted alike %d, capital words alike %d, language alike %d", total, sentences, capitals, language)
	for name, agree := range map[string]int{"sentence counts": sentences, "capital word counts": capitals, "languages": language} {
		if agree*100 < total*90 {
			t.Errorf("%s agree with lm-eval's on %d of %d prompts: under 90%%", name, agree, total)
		}
	}
}

func capitalWords(s string) int {
	n := 0
	for _, w := range wordTokens(s) {
		if isUpper(w) {
			n++
		}
	}
	return n
}
