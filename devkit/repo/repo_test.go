package repo_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/devkit/repo"
)

// A clone carries what git tracks: nothing a build makes, nothing large.
func TestNothingBuiltOrLargeIsTracked(t *testing.T) {
	root := repo.Root()
	files, err := repo.Tracked(root)
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	const maxSize = 2 << 20
	for _, f := range files {
		path := filepath.Join(root, f)
		info, err := os.Lstat(path)
		if err != nil || !info.Mode().IsRegular() {
			continue // removed in the work tree, or a link
		}
		if info.Size() > maxSize {
			t.Errorf("%s is tracked and %d bytes, over 2 MB: build output or data belongs outside the repository", f, info.Size())
		}
		compiled, err := repo.Compiled(path)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case compiled:
			t.Errorf("%s is a compiled program and tracked: go build -o bin/..., and git rm --cached it", f)
		case info.Mode()&0o111 != 0 && !repo.Script(path):
			t.Errorf("%s is tracked as executable and is not a script", f)
		}
	}
}

func TestCompiledTellsProgramsFromScripts(t *testing.T) {
	self, err := os.Executable() // this test's own binary
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := repo.Compiled(self); err != nil || !ok {
		t.Errorf("Compiled(test binary) = %v, %v; want true", ok, err)
	}
	script := filepath.Join(t.TempDir(), "s.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755)
	if ok, _ := repo.Compiled(script); ok || !repo.Script(script) {
		t.Errorf("a shell script is taken for a compiled program")
	}
}

// No module requires one that requires it back: the layers are shared (the domain
// and its adapters) over devkit (servers for tests), and the functions, the runner
// and the CLI over both.
func TestModuleGraphIsAcyclic(t *testing.T) {
	mods, err := repo.Modules(repo.Root())
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) < 5 {
		t.Fatalf("go.work names %d modules; want every module of the repository", len(mods))
	}
	if c := repo.Cycle(mods); c != nil {
		t.Errorf("the modules require each other in a cycle: %s", strings.Join(c, " → "))
	}
}

func TestCycleFindsOne(t *testing.T) {
	mods := []repo.Module{
		{Path: "a", Requires: map[string]string{"b": "v0.0.0", "x": "v1"}},
		{Path: "b", Requires: map[string]string{"c": "v0.0.0"}},
		{Path: "c", Requires: map[string]string{"a": "v0.0.0"}},
	}
	if c := repo.Cycle(mods); len(c) != 4 || c[0] != c[3] {
		t.Errorf("Cycle = %v; want a → b → c → a", c)
	}
	mods[2].Requires = nil
	if c := repo.Cycle(mods); c != nil {
		t.Errorf("Cycle = %v; want none", c)
	}
}

// Every module builds on the same version of each module they share: a function
// built alone (func build, out of the workspace) gets what the workspace tests.
func TestModulesAgreeOnVersions(t *testing.T) {
	mods, err := repo.Modules(repo.Root())
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]repo.Module{}
	for _, m := range mods {
		for dep, v := range m.Requires {
			o, seen := first[dep]
			if !seen {
				first[dep] = m
				continue
			}
			if o.Requires[dep] != v {
				t.Errorf("%s requires %s %s, %s requires %s (go work sync, then go mod tidy in each)", m.Dir, dep, v, o.Dir, o.Requires[dep])
			}
		}
	}
}
