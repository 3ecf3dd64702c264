package pyrandom_test

import (
	"slices"
	"testing"

	"github.com/evalflow/evalflow/runner/task/pyrandom"
)

// The values are CPython 3.11's (python3 -c "import random; ..."), the generator
// lm-evaluation-harness draws its few-shot examples with.
func TestTheDrawsAreCPythons(t *testing.T) {
	r := pyrandom.New(1234)
	var got [][]int
	for range 3 {
		got = append(got, r.Sample(7473, 5)) // gsm8k's train split, 5-shot: the first three docs'
	}
	want := [][]int{{6374, 3610, 957, 61, 742}, {7462, 6610, 4769, 286, 5501}, {5677, 687, 806, 6279, 2905}}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("Random(1234): sample %d = %v; want %v", i, got[i], want[i])
		}
	}

	r = pyrandom.New(1234)
	small := [][]int{r.Sample(10, 3), r.Sample(10, 3), r.Sample(30, 7), r.Sample(100, 25)}
	wantSmall := [][]int{{7, 1, 0}, {1, 0, 9}, {3, 24, 11, 7, 0, 25, 28},
		{44, 82, 79, 61, 78, 59, 19, 11, 23, 14, 1, 64, 62, 31, 8, 69, 94, 85, 76, 92, 65, 74, 5, 34, 71}}
	for i := range wantSmall {
		if !slices.Equal(small[i], wantSmall[i]) {
			t.Errorf("pool and set draws: sample %d = %v; want %v", i, small[i], wantSmall[i])
		}
	}

	r = pyrandom.New(1234)
	if a, b, c := r.Uint32(), r.GetRandBits(64).Uint64(), r.Float64(); a != 4150886329 || b != 8130081582354915166 || c != 0.11685051774599753 {
		t.Errorf("Random(1234): getrandbits(32) %d, getrandbits(64) %d, random() %v", a, b, c)
	}
	r = pyrandom.New(1234)
	if v, below := r.GetRandBits(100).String(), r.Below(7473); v != "114146597024290628900519247801" || below != 61 {
		t.Errorf("getrandbits(100) = %s, randrange(7473) = %d", v, below)
	}
	if v := pyrandom.New(0).Uint32(); v != 3626764237 {
		t.Errorf("Random(0): %d", v)
	}
	if v := pyrandom.New(1<<40 + 5).Uint32(); v != 2166296868 {
		t.Errorf("Random(2**40+5), a two-word seed: %d", v)
	}
	if v := pyrandom.New(-1234).Uint32(); v != 4150886329 {
		t.Errorf("Random(-1234) is Random(1234): %d", v)
	}
	x := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	pyrandom.New(42).Shuffle(len(x), func(i, j int) { x[i], x[j] = x[j], x[i] })
	if want := []int{7, 3, 2, 8, 5, 6, 9, 4, 0, 1}; !slices.Equal(x, want) {
		t.Errorf("Random(42).shuffle = %v; want %v", x, want)
	}
}

func BenchmarkGSM8KFewshotDraws(b *testing.B) {
	for b.Loop() {
		r := pyrandom.New(1234)
		for range 1319 {
			r.Sample(7473, 5)
		}
	}
}
