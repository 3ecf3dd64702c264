package localserver

import "testing"

func TestFreePortsArePickedBelowTheEphemeralRange(t *testing.T) {
	ports, err := FreePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < 11000 || p >= 30000 || seen[p] {
			t.Fatalf("port %d: outside 11000-29999, or repeated (%v)", p, ports)
		}
		seen[p] = true
	}
}
