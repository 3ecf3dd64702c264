package custom

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/runner/task"
	evalflow "github.com/evalflow/evalflow/shared"
)

func TestInlineSamplesScoreByTheirMetric(t *testing.T) {
	d := evalflow.DatasetSpec{Name: "custom", Task: "arith", Samples: []evalflow.CustomSample{
		{Prompt: "2+2=", Target: "4"},
		{Prompt: "Capital of France?", Target: "Paris", Metric: "includes"},
		{Prompt: "The sky is", Choices: []string{"green", "blue"}, Target: "blue"},
	}}

	docs, err := Docs(t.TempDir(), d, nil)

	if err != nil || len(docs) != 3 {
		t.Fatalf("docs %d, %v", len(docs), err)
	}
	if docs[0].Task != "arith" || !docs[0].Score(" 4.\nmore")[0].Correct || docs[0].Score("44")[0].Correct {
		t.Error("exact_match scores the first line, ignoring case and punctuation")
	}
	if !docs[1].Score("It is paris, of course")[0].Correct || docs[1].Score("Lyon")[0].Correct {
		t.Error("includes finds the target anywhere, ignoring case")
	}
	if !docs[2].Score("Blue")[0].Correct {
		t.Error("a choice sample asked generatively is right when the answer is the target choice")
	}
}

func TestChoicesByLogprobsPickTheLikeliest(t *testing.T) {
	d := evalflow.DatasetSpec{Name: "custom", Method: task.Loglikelihood, Samples: []evalflow.CustomSample{
		{Prompt: "The sky is", Choices: []string{"green", "blue", "red"}, Target: "blue"}}}

	docs, _ := Docs(t.TempDir(), d, nil)

	if got := docs[0].Choices; strings.Join(got, "|") != " green| blue| red" || docs[0].Metric != "acc" {
		t.Fatalf("choices %q metric %q", got, docs[0].Metric)
	}
	if f := docs[0].ScoreChoices([]float64{-3, -1, -2}); !f[0].Correct || f[0].Extracted != "blue" {
		t.Fatalf("scored %+v", f)
	}
}

func TestAFileWithABadLineIsRefusedNamingTheLine(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "custom"), 0o755)
	os.WriteFile(filepath.Join(dir, "custom", "qa.jsonl"), []byte(`{"prompt":"a","target":"b"}`+"\n\n"+`{"prompt":"c"}`+"\n"), 0o644)

	_, err := Docs(dir, evalflow.DatasetSpec{Name: "custom", Path: "qa.jsonl"}, nil)

	if err == nil || !strings.Contains(err.Error(), "line 3.target") {
		t.Fatalf("err = %v; want line 3's target named", err)
	}
}
