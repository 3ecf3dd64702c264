package pyjson_test

import (
	"encoding/json"
	"testing"

	"github.com/evalflow/evalflow/runner/task/pyjson"
)

// Python's bare NaN and infinities become null; the same words in strings stay.
func TestPythonsNumbersBecomeNull(t *testing.T) {
	in := `{"a": NaN, "b": "NaN \"Infinity\"", "c": [-Infinity, Infinity]}`
	want := `{"a": null, "b": "NaN \"Infinity\"", "c": [null, null]}`
	if got := string(pyjson.Standard([]byte(in))); got != want || !json.Valid([]byte(got)) {
		t.Errorf("Standard(%s) = %s; want %s", in, got, want)
	}
}
