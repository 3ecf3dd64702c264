package task

import (
	"slices"
	"testing"
)

func TestSelectByCountFractionAndSeed(t *testing.T) {
	seed, other := 7, 8
	cases := []struct {
		n     int
		limit float64
		seed  *int
		want  int
	}{
		{10, 0, nil, 10}, {10, 3, nil, 3}, {10, 30, nil, 10}, {10, 0.25, nil, 3}, {135, 0.1, nil, 14}, {10, 4, &seed, 4},
	}
	for _, c := range cases {
		got := Select(c.n, c.limit, c.seed)
		if len(got) != c.want || !slices.IsSorted(got) {
			t.Errorf("Select(%d, %v) = %v; want %d indices in order", c.n, c.limit, got, c.want)
		}
	}
	if first := Select(100, 5, nil); !slices.Equal(first, []int{0, 1, 2, 3, 4}) {
		t.Errorf("without a seed: %v; want the first five, as lm-eval", first)
	}
	a, b, c := Select(100, 5, &seed), Select(100, 5, &seed), Select(100, 5, &other)
	if !slices.Equal(a, b) || slices.Equal(a, c) || slices.Equal(a, []int{0, 1, 2, 3, 4}) {
		t.Errorf("seeded: %v, again %v, other seed %v; want repeatable, seed-dependent, random", a, b, c)
	}
}
