package schema

import (
	"slices"
	"testing"
)

// A list as CPython's repr prints it reads back as the list.
func TestAPythonListOfStringsReadsBack(t *testing.T) {
	got, err := pyStrings(`["It's yes", 'a"b', 'x\ny\\', 'é', 'both \' and "']`) // repr(['It\'s yes', 'a"b', 'x\ny\\', 'é', 'both \' and "'])
	want := []string{"It's yes", `a"b`, "x\ny\\", "é", `both ' and "`}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("pyStrings = %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{"'a', 'b'", "['a' 'b']", "['a', 1]", "['unclosed]"} {
		if _, err := pyStrings(bad); err == nil {
			t.Errorf("pyStrings(%q): no error", bad)
		}
	}
}
