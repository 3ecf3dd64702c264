// Package repo reads the evalflow repository itself — its modules and the files git
// tracks — for the tests that keep the house in order: nothing built is committed,
// no module requires one that requires it back, and every module builds on the same
// versions of what they share.
package repo

import (
	"bytes"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/modfile"
)

// Root is the checkout's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0) // <checkout>/devkit/repo/repo.go
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Module is one of the workspace's modules: its directory (relative to the root), its
// path, what its go.mod requires (path to version), and the workspace's modules its
// Go files (tests included) import.
type Module struct {
	Dir      string
	Path     string
	Requires map[string]string
	Imports  map[string]bool
}

// Modules reads every module go.work uses under root.
func Modules(root string) ([]Module, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		return nil, err
	}
	work, err := modfile.ParseWork("go.work", b, nil)
	if err != nil {
		return nil, err
	}
	var mods []Module
	for _, u := range work.Use {
		dir := filepath.Clean(u.Path)
		name := filepath.Join(dir, "go.mod")
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			return nil, err
		}
		f, err := modfile.Parse(name, b, nil)
		if err != nil {
			return nil, err
		}
		m := Module{Dir: dir, Path: f.Module.Mod.Path, Requires: map[string]string{}}
		for _, r := range f.Require {
			m.Requires[r.Mod.Path] = r.Mod.Version
		}
		mods = append(mods, m)
	}
	for i := range mods {
		if mods[i].Imports, err = imports(root, mods[i], mods); err != nil {
			return nil, err
		}
	}
	return mods, nil
}

// imports lists the modules of mods that m's Go files import, its tests' included.
func imports(root string, m Module, mods []Module) (map[string]bool, error) {
	used := map[string]bool{}
	dir := filepath.Join(root, m.Dir)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != dir {
				return filepath.SkipDir // a module of its own
			}
			if n := d.Name(); path != dir && (n == "testdata" || strings.HasPrefix(n, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if owner := ownerOf(p, mods); owner != "" && owner != m.Path {
				used[owner] = true
			}
		}
		return nil
	})
	return used, err
}

// ownerOf is the module of mods that package pkg belongs to (the longest path that
// holds it), or "".
func ownerOf(pkg string, mods []Module) string {
	owner := ""
	for _, m := range mods {
		if (pkg == m.Path || strings.HasPrefix(pkg, m.Path+"/")) && len(m.Path) > len(owner) {
			owner = m.Path
		}
	}
	return owner
}

// Cycle is a chain of modules, each requiring or importing the next, that comes back
// to where it began (a, b, a), or nil when there is none.
func Cycle(mods []Module) []string {
	own := map[string]Module{}
	for _, m := range mods {
		own[m.Path] = m
	}
	const (
		unseen = iota
		open
		closed
	)
	state := map[string]int{}
	var path []string
	var visit func(p string) []string
	visit = func(p string) []string {
		switch state[p] {
		case open:
			for i, q := range path {
				if q == p {
					return append(append([]string(nil), path[i:]...), p)
				}
			}
		case closed:
			return nil
		}
		state[p] = open
		path = append(path, p)
		deps := map[string]bool{}
		maps.Copy(deps, own[p].Imports)
		for dep := range own[p].Requires {
			deps[dep] = true
		}
		for _, dep := range slices.Sorted(maps.Keys(deps)) {
			if _, ours := own[dep]; ours {
				if c := visit(dep); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		state[p] = closed
		return nil
	}
	for _, m := range mods {
		if c := visit(m.Path); c != nil {
			return c
		}
	}
	return nil
}

// Tracked lists the files git tracks under root (relative paths), or an error when
// root is not a git checkout.
func Tracked(root string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files in %s: %w", root, err)
	}
	var files []string
	for _, f := range bytes.Split(out, []byte{0}) {
		if len(f) > 0 {
			files = append(files, string(f))
		}
	}
	return files, nil
}

// Compiled reports whether the file at path is a compiled program or library: an
// ELF, Mach-O or PE file, or a WebAssembly module (not a script).
func Compiled(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := f.Read(head)
	head = head[:n]
	for _, magic := range [][]byte{
		[]byte("\x7fELF"), []byte("MZ"), []byte("\x00asm"),
		{0xfe, 0xed, 0xfa, 0xce}, {0xfe, 0xed, 0xfa, 0xcf}, {0xce, 0xfa, 0xed, 0xfe}, {0xcf, 0xfa, 0xed, 0xfe}, {0xca, 0xfe, 0xba, 0xbe},
	} {
		if bytes.HasPrefix(head, magic) {
			return true, nil
		}
	}
	return false, nil
}

// Script reports whether the file at path starts with "#!": an executable a person
// can read.
func Script(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 2)
	n, _ := f.Read(head)
	return strings.HasPrefix(string(head[:n]), "#!")
}
