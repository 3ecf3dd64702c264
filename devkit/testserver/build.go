package testserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// RepoRoot is the checkout's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0) // <checkout>/devkit/testserver/build.go
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles a main package of the workspace (e.g.
// github.com/evalflow/evalflow/runner/cmd/evalflow-runner) once per test process and
// returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	return build(t, pkg, "")
}

// BuildStatic is Build with CGO_ENABLED=0: a binary for an image with no libc.
func BuildStatic(t testing.TB, pkg string) string {
	t.Helper()
	return build(t, pkg, "static")
}

func build(t testing.TB, pkg, flavour string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg+flavour]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "evalflow-test-bin")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, flavour, pkg[strings.LastIndex(pkg, "/")+1:])
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	if flavour == "static" {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg+flavour] = out
	return out
}
