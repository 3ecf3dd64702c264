// Package pyrandom is Python's random.Random, bit for bit: the Mersenne Twister
// (MT19937) seeded from an integer as CPython seeds it, and the draws lm-evaluation-
// harness makes with it (sample, shuffle, randbelow). A task whose few-shot examples
// lm-eval draws with Random(1234).sample gets the same examples here.
package pyrandom

import (
	"math"
	"math/big"
	"math/bits"
)

const (
	n         = 624
	m         = 397
	matrixA   = 0x9908b0df
	upperMask = 0x80000000
	lowerMask = 0x7fffffff
)

// Random is one generator's state. Its zero value is not seeded: use New.
type Random struct {
	mt  [n]uint32
	mti int
}

// New is random.Random(seed) of CPython: the seed's absolute value, in 32-bit words
// from the least significant, fed to init_by_array.
func New(seed int64) *Random {
	var v big.Int
	v.SetInt64(seed)
	v.Abs(&v)
	var key []uint32
	for _, w := range v.Bits() { // little-endian machine words
		for i := 0; i < bits.UintSize/32; i++ {
			key = append(key, uint32(uint64(w)>>(32*i)))
		}
	}
	for len(key) > 1 && key[len(key)-1] == 0 {
		key = key[:len(key)-1]
	}
	if len(key) == 0 {
		key = []uint32{0}
	}
	r := &Random{}
	r.initByArray(key)
	return r
}

func (r *Random) initGenrand(s uint32) {
	r.mt[0] = s
	for i := 1; i < n; i++ {
		r.mt[i] = 1812433253*(r.mt[i-1]^(r.mt[i-1]>>30)) + uint32(i)
	}
	r.mti = n
}

func (r *Random) initByArray(key []uint32) {
	r.initGenrand(19650218)
	i, j := 1, 0
	for k := max(n, len(key)); k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1664525)) + key[j] + uint32(j)
		i++
		j++
		if i >= n {
			r.mt[0] = r.mt[n-1]
			i = 1
		}
		if j >= len(key) {
			j = 0
		}
	}
	for k := n - 1; k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1566083941)) - uint32(i)
		i++
		if i >= n {
			r.mt[0] = r.mt[n-1]
			i = 1
		}
	}
	r.mt[0] = 0x80000000
}

// Uint32 is the next 32-bit output (genrand_uint32).
func (r *Random) Uint32() uint32 {
	if r.mti >= n {
		for k := 0; k < n; k++ {
			y := (r.mt[k] & upperMask) | (r.mt[(k+1)%n] & lowerMask)
			next := r.mt[(k+m)%n] ^ (y >> 1)
			if y&1 != 0 {
				next ^= matrixA
			}
			r.mt[k] = next
		}
		r.mti = 0
	}
	y := r.mt[r.mti]
	r.mti++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

// GetRandBits is getrandbits(k): k random bits, the first 32 drawn the least
// significant.
func (r *Random) GetRandBits(k int) *big.Int {
	out := new(big.Int)
	for shift := 0; k > 0; shift += 32 {
		w := r.Uint32()
		if k < 32 {
			w >>= 32 - k
		}
		out.Or(out, new(big.Int).Lsh(big.NewInt(int64(w)), uint(shift)))
		k -= 32
	}
	return out
}

// Below is _randbelow(n): an int in [0, n), by rejection of getrandbits(n.bit_length()).
func (r *Random) Below(n int) int {
	if n <= 0 {
		return 0
	}
	k := bits.Len(uint(n))
	for {
		var v int
		if k <= 32 {
			v = int(r.Uint32() >> (32 - k))
		} else {
			v = int(r.GetRandBits(k).Int64())
		}
		if v < n {
			return v
		}
	}
}

// Float64 is random(): 53 random bits in [0, 1).
func (r *Random) Float64() float64 {
	a, b := r.Uint32()>>5, r.Uint32()>>6
	return (float64(a)*67108864.0 + float64(b)) * (1.0 / 9007199254740992.0)
}

// Sample is sample(range(size), k): k distinct indices of [0, size), in the order
// CPython draws them (its pool for small populations, its set beyond). k outside
// [0, size] gives nil.
func (r *Random) Sample(size, k int) []int {
	if k < 0 || k > size {
		return nil
	}
	result := make([]int, k)
	setsize := 21
	if k > 5 {
		setsize += int(math.Pow(4, math.Ceil(math.Log(float64(k*3))/math.Log(4))))
	}
	if size <= setsize {
		pool := make([]int, size)
		for i := range pool {
			pool[i] = i
		}
		for i := range k {
			j := r.Below(size - i)
			result[i] = pool[j]
			pool[j] = pool[size-i-1]
		}
		return result
	}
	selected := make(map[int]bool, k)
	for i := range k {
		j := r.Below(size)
		for selected[j] {
			j = r.Below(size)
		}
		selected[j] = true
		result[i] = j
	}
	return result
}

// Shuffle is shuffle(x) for a sequence of length size: swap is called as CPython swaps.
func (r *Random) Shuffle(size int, swap func(i, j int)) {
	for i := size - 1; i > 0; i-- {
		swap(i, r.Below(i+1))
	}
}
