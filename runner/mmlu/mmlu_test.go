package mmlu

import (
	"testing"
)

func TestPromptMatchesLMEvalGenerativeTemplate(t *testing.T) {
	shot := Question{Text: " Find 2+2. ", Choices: [4]string{"1", "2", "3", "4"}, Answer: "D"}
	q := Question{Text: "What is 1+1?", Choices: [4]string{"0", "2", "5", "9"}, Answer: "B"}

	got := Prompt("high_school_mathematics", []Question{shot}, q)

	want := "The following are multiple choice questions (with answers) about high school mathematics.\n\n" +
		"Find 2+2.\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: D\n\n" +
		"What is 1+1?\nA. 0\nB. 2\nC. 5\nD. 9\nAnswer:"
	if got != want {
		t.Fatalf("prompt:\n%q\nwant:\n%q", got, want)
	}
}

func TestExtractAndScore(t *testing.T) {
	cases := []struct {
		response, extracted string
		correct             bool
	}{
		{" B", "B", true},
		{"b.", "b.", true},
		{"(B)", "(B)", true},
		{"B\nbecause...", "B", true},
		{"\n\nC", "C", false},
		{"The answer is B", "The answer is B", false},
		{"", "", false},
	}
	for _, c := range cases {
		got := Extract(c.response)
		if got != c.extracted || Correct(got, "B") != c.correct {
			t.Errorf("Extract(%q) = %q (correct %v); want %q (%v)", c.response, got, Correct(got, "B"), c.extracted, c.correct)
		}
	}
}
