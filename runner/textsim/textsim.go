// Package textsim computes the text-similarity metrics lm-evaluation-harness uses for
// TruthfulQA's generation task: sacrebleu's sentence BLEU (tokenize "intl", smoothing
// "exp", no effective order, as corpus_bleu over one pair) and rouge_score's ROUGE-1,
// ROUGE-2 and ROUGE-Lsum F-measures (lower-cased alphanumeric tokens, no stemming),
// all on a 0–100 scale.
package textsim

import (
	"math"
	"regexp"
	"sort"
	"strings"
)

var intl = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`(\P{N})(\p{P})`), "${1} ${2} "}, // punctuation after a non-digit
	{regexp.MustCompile(`(\p{P})(\P{N})`), " ${1} ${2}"}, // punctuation before a non-digit
	{regexp.MustCompile(`(\p{S})`), " ${1} "},            // symbols
}

// TokenizeIntl is sacrebleu's "intl" tokenizer (TokenizerV14International).
func TokenizeIntl(s string) []string {
	for _, r := range intl {
		s = r.re.ReplaceAllString(s, r.repl)
	}
	return strings.Fields(s)
}

func ngrams(tokens []string, n int) map[string]int {
	out := map[string]int{}
	for i := 0; i+n <= len(tokens); i++ {
		out[strings.Join(tokens[i:i+n], " ")]++
	}
	return out
}

// BLEU is sacrebleu's corpus BLEU of one hypothesis against one reference, with
// tokenize="intl", smooth_method="exp", use_effective_order=False.
func BLEU(ref, hyp string) float64 {
	h := TokenizeIntl(strings.TrimRight(hyp, " \t\n\r\v\f"))
	r := TokenizeIntl(strings.TrimRight(ref, " \t\n\r\v\f"))
	const order = 4
	var correct, total [order]int
	for n := 1; n <= order; n++ {
		hn, rn := ngrams(h, n), ngrams(r, n)
		for g, c := range hn {
			correct[n-1] += min(c, rn[g])
			total[n-1] += c
		}
	}
	bp := 1.0
	if len(h) < len(r) {
		bp = 0
		if len(h) > 0 {
			bp = math.Exp(1 - float64(len(r))/float64(len(h)))
		}
	}
	if correct == [order]int{} {
		return 0 // sacrebleu's early stop when nothing matches
	}
	var precisions [order]float64
	smooth := 1.0
	for n := 1; n <= order; n++ {
		if total[n-1] == 0 {
			break
		}
		if correct[n-1] == 0 {
			smooth *= 2
			precisions[n-1] = 100 / (smooth * float64(total[n-1]))
		} else {
			precisions[n-1] = 100 * float64(correct[n-1]) / float64(total[n-1])
		}
	}
	sum := 0.0
	for _, p := range precisions {
		if p == 0 {
			sum += -9999999999 // sacrebleu's my_log(0)
		} else {
			sum += math.Log(p)
		}
	}
	return bp * math.Exp(sum/order)
}

var (
	nonAlnum = regexp.MustCompile(`[^a-z0-9]+`)
	valid    = regexp.MustCompile(`^[a-z0-9]+$`)
)

// TokenizeRouge is rouge_score's default tokenizer without stemming.
func TokenizeRouge(s string) []string {
	s = nonAlnum.ReplaceAllString(strings.ToLower(s), " ")
	var out []string
	for _, t := range regexp.MustCompile(`\s+`).Split(s, -1) {
		if valid.MatchString(t) {
			out = append(out, t)
		}
	}
	return out
}

func fmeasure(p, r float64) float64 {
	if p+r > 0 {
		return 2 * p * r / (p + r)
	}
	return 0
}

// RougeN is rouge_score's rougeN F-measure (0–1).
func RougeN(ref, hyp string, n int) float64 {
	rn, hn := ngrams(TokenizeRouge(ref), n), ngrams(TokenizeRouge(hyp), n)
	inter, rc, hc := 0, 0, 0
	for g, c := range rn {
		inter += min(c, hn[g])
		rc += c
	}
	for _, c := range hn {
		hc += c
	}
	return fmeasure(float64(inter)/float64(max(hc, 1)), float64(inter)/float64(max(rc, 1)))
}

func sentences(s string) [][]string {
	var out [][]string
	for _, line := range strings.Split(s, "\n") {
		if line != "" {
			out = append(out, TokenizeRouge(line))
		}
	}
	return out
}

// lcsIndices are the indices in ref of one longest common subsequence with can, as
// rouge_score's table backtrack finds them.
func lcsIndices(ref, can []string) []int {
	t := make([][]int, len(ref)+1)
	for i := range t {
		t[i] = make([]int, len(can)+1)
	}
	for i := 1; i <= len(ref); i++ {
		for j := 1; j <= len(can); j++ {
			if ref[i-1] == can[j-1] {
				t[i][j] = t[i-1][j-1] + 1
			} else {
				t[i][j] = max(t[i-1][j], t[i][j-1])
			}
		}
	}
	var idx []int
	for i, j := len(ref), len(can); i > 0 && j > 0; {
		switch {
		case ref[i-1] == can[j-1]:
			idx = append([]int{i - 1}, idx...)
			i, j = i-1, j-1
		case t[i][j-1] > t[i-1][j]:
			j--
		default:
			i--
		}
	}
	return idx
}

// RougeLsum is rouge_score's summary-level LCS F-measure (0–1): sentences split on "\n".
func RougeLsum(ref, hyp string) float64 {
	rs, hs := sentences(ref), sentences(hyp)
	m, n := 0, 0
	rc, hc := map[string]int{}, map[string]int{}
	for _, s := range rs {
		m += len(s)
		for _, t := range s {
			rc[t]++
		}
	}
	for _, s := range hs {
		n += len(s)
		for _, t := range s {
			hc[t]++
		}
	}
	if m == 0 || n == 0 {
		return 0
	}
	hits := 0
	for _, r := range rs {
		union := map[int]bool{}
		for _, c := range hs {
			for _, i := range lcsIndices(r, c) {
				union[i] = true
			}
		}
		idx := make([]int, 0, len(union))
		for i := range union {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		for _, i := range idx {
			if t := r[i]; hc[t] > 0 && rc[t] > 0 {
				hits++
				hc[t]--
				rc[t]--
			}
		}
	}
	return fmeasure(float64(hits)/float64(n), float64(hits)/float64(m))
}

// prepare is lm-eval's _prepare_summary: sentence breaks for rougeLsum.
func prepare(s string) string { return strings.ReplaceAll(s, " . ", ".\n") }

// Rouge returns rouge1, rouge2 and rougeLsum of hyp against ref on lm-eval's 0–100
// scale.
func Rouge(ref, hyp string) (r1, r2, rL float64) {
	ref, hyp = prepare(ref), prepare(hyp)
	return 100 * RougeN(ref, hyp, 1), 100 * RougeN(ref, hyp, 2), 100 * RougeLsum(ref, hyp)
}
