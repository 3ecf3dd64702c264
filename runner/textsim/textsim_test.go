package textsim

import (
	"math"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestIntlTokenizerSplitsPunctuationButNotNumbers(t *testing.T) {
	got := strings.Join(TokenizeIntl("Hello, world! It costs $3.50 (really)."), " ")
	if got != "Hello , world ! It costs $ 3.50 ( really ) ." {
		t.Fatalf("tokens %q", got)
	}
}

func TestBLEUByHand(t *testing.T) {
	if got := BLEU("the cat sat on the mat", "the cat sat on the mat"); !near(got, 100) {
		t.Fatalf("identical: %v", got)
	}
	if got := BLEU("the cat sat on the mat", "dogs bark loudly"); got != 0 {
		t.Fatalf("nothing in common: %v; want 0 (sacrebleu's early stop)", got)
	}
	// hyp "the cat sat" vs ref "the cat sat on the mat": 1-3-grams all match (3/3, 2/2,
	// 1/1), no 4-gram exists (total 0: the loop stops, precision 0 → my_log(0)), so the
	// geometric mean collapses to 0 under order 4 without effective order.
	if got := BLEU("the cat sat on the mat", "the cat sat"); got > 1e-100 {
		t.Fatalf("short hypothesis: %v; want ~0", got)
	}
	// hyp "the cat sat on a mat" vs ref "the cat sat on the mat": precisions 5/6, 3/5,
	// 2/4, 1/3; same length, bp 1.
	want := math.Exp((math.Log(500.0/6) + math.Log(60) + math.Log(50) + math.Log(100.0/3)) / 4)
	if got := BLEU("the cat sat on the mat", "the cat sat on a mat"); !near(got, want) {
		t.Fatalf("partial: %v; want %v", got, want)
	}
	// exp smoothing: precisions 5/6, 3/5, 1/4, and no 4-gram of 3 matches → 100 / (2 * 3)
	want = math.Exp((math.Log(500.0/6) + math.Log(60) + math.Log(25) + math.Log(100.0/6)) / 4)
	if got := BLEU("a b c d e f", "a b c x e f"); !near(got, want) {
		t.Fatalf("smoothed: %v; want %v", got, want)
	}
}

func TestRougeByHand(t *testing.T) {
	// ref [the cat sat on the mat], hyp [the cat sat on a mat]: 5 unigrams and 3 bigrams
	// shared, an LCS of 5.
	r1, r2, rL := Rouge("The cat sat on the mat.", "the cat sat on a mat")
	if !near(r1, 100*5.0/6) || !near(r2, 100*3.0/5) || !near(rL, 100*5.0/6) {
		t.Fatalf("rouge1 %v rouge2 %v rougeLsum %v", r1, r2, rL)
	}
	if _, _, rL := Rouge("a b", ""); rL != 0 {
		t.Fatal("an empty hypothesis scores 0")
	}
}
