package node

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A node started again on its state keeps its registry's address, which the
// Deployments kept in etcd name their images at, unless that port is taken now.
func TestTheRegistryListensWhereItDidBefore(t *testing.T) {
	dir := t.TempDir()
	first, err := registryAddr(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "addr")); strings.TrimSpace(string(b)) != first {
		t.Fatalf("recorded %q; want %q", b, first)
	}
	if again, err := registryAddr(dir, "127.0.0.1"); err != nil || again != first {
		t.Fatalf("started again: %q, %v; want %q", again, err, first)
	}

	l, err := net.Listen("tcp", first) // something else has the port now
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	moved, err := registryAddr(dir, "127.0.0.1")
	if err != nil || moved == first {
		t.Fatalf("with its port taken: %q, %v; want another port", moved, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "addr")); strings.TrimSpace(string(b)) != moved {
		t.Fatalf("recorded %q; want the new %q", b, moved)
	}
	if other, err := registryAddr(dir, "127.0.0.2"); err != nil || !strings.HasPrefix(other, "127.0.0.2:") {
		t.Fatalf("on another node address: %q, %v", other, err)
	}
}
