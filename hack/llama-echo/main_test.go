package main

import (
	"slices"
	"testing"
)

func TestOffsetsPointIntoTheReturnedText(t *testing.T) {
	// "Hi:\nA" echoed, then " x" generated; SentencePiece's dummy prefix space on "Hi".
	pieces := []string{" Hi", ":", "\n", "A", " x"}
	if got, want := offsets(pieces, 4, "Hi:\nA", true), []int{0, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Fatalf("echo: offsets %v, want %v", got, want)
	}
	// Without a dummy prefix the offsets are the pieces' running lengths.
	if got, want := offsets([]string{"Hi", ":"}, 2, "Hi:", true), []int{0, 2}; !slices.Equal(got, want) {
		t.Fatalf("no prefix: offsets %v, want %v", got, want)
	}
	// Without echo only generated tokens come back, after the prompt.
	if got, want := offsets([]string{" x", "y"}, 0, "Hi:", false), []int{3, 5}; !slices.Equal(got, want) {
		t.Fatalf("no echo: offsets %v, want %v", got, want)
	}
	// Offsets count characters, as OpenAI and vLLM do: "é" is one, and a byte-fallback
	// piece inside it starts where the character does.
	if got, want := offsets([]string{" Caf", "\xc3", "\xa9", ":", " B"}, 4, "Café:", true), []int{0, 3, 3, 4, 5}; !slices.Equal(got, want) {
		t.Fatalf("multi-byte: offsets %v, want %v", got, want)
	}
}
