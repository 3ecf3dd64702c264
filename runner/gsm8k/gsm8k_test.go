package gsm8k

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/task"
)

func TestCoTPromptIsLMEvalsGsm8kCot(t *testing.T) {
	got := Prompt(CoT, "What is 2+2?", 8)

	if !strings.HasPrefix(got, "Q: There are 15 trees in the grove.") {
		t.Fatalf("prompt does not open with the first exemplar:\n%s", got[:80])
	}
	if !strings.HasSuffix(got, "The answer is 8.\n\nQ: What is 2+2?\nA:") {
		t.Fatalf("prompt does not end with the last exemplar and the question:\n%q", got[len(got)-80:])
	}
	if n := strings.Count(got, "\nA: "); n != 8 {
		t.Fatalf("%d answered exemplars; want 8", n)
	}
	if z := Prompt(ZeroShot, "What is 2+2?", 0); z != "Question: What is 2+2?\nAnswer:" {
		t.Fatalf("zero-shot prompt %q", z)
	}
}

func TestFiltersAndExactMatchAsLMEvalDefinesThem(t *testing.T) {
	cases := []struct {
		variant, response, target string
		strict, flexible          string
		strictOK, flexibleOK      bool
	}{
		// strict-match needs "The answer is N" and one more character (the regex ends in ".")
		{CoT, " 5 + 4 = 9. The answer is 9.", "9", "9", "9.", true, true},
		{CoT, "The answer is 9", "9", Invalid, "9", false, true},
		{CoT, "So 1,000 + 234 = 1,234. The answer is 1,234.", "1234", "1,234", "1,234.", true, true},
		{CoT, "She pays $18. The answer is $18.", "18", Invalid, "$18.", false, true},
		{CoT, "The answer is -3 apples.", "-3", "-3", "-3", true, true},
		{CoT, "I think 12 then 7", "7", Invalid, "7", false, true},
		{CoT, "no numbers at all", "7", Invalid, Invalid, false, false},
		{ZeroShot, "Janet sells 9 eggs.\n#### 18", "18", "18", "18", true, true},
		{ZeroShot, "#### 18 dollars, or 20", "18", "18", "20", true, false},
	}
	for _, c := range cases {
		got := Score(c.variant, c.response, c.target)
		if got[0].Extracted != c.strict || got[0].Correct != c.strictOK || got[1].Extracted != c.flexible || got[1].Correct != c.flexibleOK {
			t.Errorf("%s %q: strict %q %v, flexible %q %v; want %q %v, %q %v", c.variant, c.response,
				got[0].Extracted, got[0].Correct, got[1].Extracted, got[1].Correct, c.strict, c.strictOK, c.flexible, c.flexibleOK)
		}
	}
}

func TestTargetIsTheNumberAfterTheMarks(t *testing.T) {
	it := Item{Answer: "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"}
	if it.Target() != "18" {
		t.Fatalf("target %q", it.Target())
	}
}

// The prompts lm-evaluation-harness renders for gsm8k (5-shot), held as digests of the
// strings CPython renders with lm-eval's logic (Random(1234).sample(train, 5), one
// draw a document in order; "Question: ...\nAnswer:" + " " + answer + "\n\n" an
// example): documents 0, 1 and 1318 of the test split, whether they are scored alone
// or after every document before them.
func TestTheDefaultIsLMEvals5ShotGsm8kByteForByte(t *testing.T) {
	data := testserver.SharedDir(t)
	want := map[int]struct {
		sha  string
		size int // in characters
	}{
		0:    {"32680f263ba83280e98a8a24ceefed10a722a4cdcd9f4d78e93c45d43143ca66", 3187},
		1:    {"e6b9a0195411932e5323ed20ad05e965b08b979103bbb26594a5bdf123d27990", 3320},
		1318: {"c9c63955e0cf2185cb505fbc69b80561f7bad5c30a5daee94cc851b31107f4cb", 3100},
	}
	for name, pick := range map[string]task.Picker{
		"every document":  nil,
		"the three alone": func(int) []int { return []int{0, 1, 1318} },
	} {
		docs, err := Docs(filepath.Join(data, "datasets"), "", Shots(""), pick)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			w, ok := want[d.Index]
			if !ok {
				continue
			}
			sum := sha256.Sum256([]byte(d.Prompt))
			if got := hex.EncodeToString(sum[:]); got != w.sha || utf8.RuneCountInString(d.Prompt) != w.size {
				t.Errorf("%s: document %d's prompt (%d bytes, sha256 %s) is not lm-eval's (%d characters, %s):\n%s", name, d.Index, len(d.Prompt), got, w.size, w.sha, d.Prompt)
			}
			if d.Task != "gsm8k" || strings.Count(d.Prompt, "\nAnswer: ") != 5 || !strings.HasSuffix(d.Prompt, "\nAnswer:") {
				t.Errorf("document %d: task %q, prompt ending %q", d.Index, d.Task, d.Prompt[len(d.Prompt)-20:])
			}
		}
	}
}

// Through chat, the examples are turns (lm-eval's --apply_chat_template, few-shot as
// multi-turn): document 1's 11 messages, held as the digest of CPython's.
func TestTheChatTurnsAreLMEvalsMultiturn(t *testing.T) {
	docs, err := Docs(filepath.Join(testserver.SharedDir(t), "datasets"), FewShot, 5, func(int) []int { return []int{1} })
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, m := range docs[0].Messages {
		b.WriteString(m.Role + "\x00" + m.Content + "\x00")
	}
	sum := sha256.Sum256([]byte(b.String()))
	if got := hex.EncodeToString(sum[:]); len(docs[0].Messages) != 11 || got != "2ad38eabc3d2a5222f3adbab7f889bdc0d89d225421ed5c11edea7c163809689" {
		t.Errorf("document 1: %d messages, digest %s; want lm-eval's 11", len(docs[0].Messages), got)
	}
	cfg := Config(FewShot, 5)
	if cfg.Task != "gsm8k" || cfg.NumFewshot != 5 || cfg.FewshotSplit != "train" {
		t.Errorf("config %+v", cfg)
	}
	if zero, _ := Docs(filepath.Join(testserver.SharedDir(t), "datasets"), ZeroShot, 0, func(int) []int { return []int{1} }); len(zero[0].Messages) != 0 || !strings.HasPrefix(zero[0].Prompt, "Question: ") {
		t.Errorf("zero-shot: %d messages, prompt %q", len(zero[0].Messages), zero[0].Prompt)
	}
	if _, err := Docs(filepath.Join(testserver.SharedDir(t), "datasets"), ZeroShot, 2, nil); err == nil {
		t.Error("zeroshot with 2 examples: no error")
	}
}
