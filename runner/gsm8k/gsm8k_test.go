package gsm8k

import (
	"strings"
	"testing"
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
