package results

import (
	"math"

	"github.com/evalflow/evalflow/runner/task/pyrandom"
)

// BootstrapIters is lm-eval's default --bootstrap_iters.
const BootstrapIters = 100000

// aggregations are the metrics lm-eval does not average: each its aggregate of the
// samples' values, its standard error bootstrapped.
var aggregations = map[string]func([]float64) float64{
	"perplexity": perplexity,
}

// perplexity is lm-eval's: exp(-mean) of the log-likelihoods.
func perplexity(lls []float64) float64 { return math.Exp(-mean(lls)) }

func mean(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// bootstrapStderr is lm-eval's bootstrap_stderr: iters resamples of xs with
// replacement, in chunks of 1,000, chunk i drawn by CPython's Random(i) as
// random.choices draws (floor(random() * n) each); the sample standard deviation of f
// over them.
func bootstrapStderr(f func([]float64) float64, xs []float64, iters int) float64 {
	chunk := min(1000, iters)
	res := make([]float64, 0, iters)
	sample := make([]float64, len(xs))
	n := float64(len(xs))
	for i := range iters / chunk {
		rnd := pyrandom.New(int64(i))
		for range chunk {
			for j := range sample {
				sample[j] = xs[int(math.Floor(rnd.Float64()*n))]
			}
			res = append(res, f(sample))
		}
	}
	mu := mean(res)
	ss := 0.0
	for _, x := range res {
		ss += (x - mu) * (x - mu)
	}
	return math.Sqrt(ss / float64(len(res)-1))
}
