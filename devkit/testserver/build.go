package testserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/evalflow/evalflow/devkit/repo"
)

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// RepoRoot is the checkout's top directory.
func RepoRoot() string { return repo.Root() }

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
		d, err := binDir()
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

// binDir is this test process's directory for the binaries it builds:
// $TMPDIR/evalflow-test-bin/PID. A test process cannot remove its own once its last
// test ends, so each removes those of processes that have ended.
func binDir() (string, error) {
	parent := filepath.Join(os.TempDir(), "evalflow-test-bin")
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
	d := filepath.Join(parent, strconv.Itoa(os.Getpid()))
	return d, os.MkdirAll(d, 0o700)
}
