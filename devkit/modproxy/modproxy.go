// Package modproxy writes a file-based Go module proxy serving evalflow's own
// modules at one version, so that a function's directory builds alone — as the func
// CLI's builders see it, without the replace directives that point at ../../shared in
// the checkout.
//
// The version names the modules' content (Version): the go command takes a module
// version as immutable, and keeps what it read of one (the module cache, and its index
// of the packages' imports in the build cache), so content served again at the same
// version would build against stale imports. A function's copy is pinned to it (Pin).
package modproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

// Write replaces out with a file-based Go module proxy (GOPROXY=file://OUT) serving
// the modules in the directories dirs of the checkout root, each at version, zipped
// as the go command zips them (golang.org/x/mod/zip), each requiring the others at
// that same version (Pin). It returns the modules' paths.
func Write(out, root, version string, dirs ...string) ([]string, error) {
	if len(dirs) == 0 {
		return nil, fmt.Errorf("modproxy: name the modules' directories, e.g. shared localjob devkit")
	}
	var paths []string
	for _, d := range dirs {
		gomod, err := os.ReadFile(filepath.Join(root, d, "go.mod"))
		if err != nil {
			return nil, err
		}
		paths = append(paths, modfile.ModulePath(gomod))
	}
	if err := os.RemoveAll(out); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "modproxy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	for i, d := range dirs {
		// A copy, pinned: the go command reads a module's requirements from its go.mod.
		src := filepath.Join(work, filepath.Base(d))
		if err := os.CopyFS(src, os.DirFS(filepath.Join(root, d))); err != nil {
			return nil, fmt.Errorf("modproxy: copy %s: %w", d, err)
		}
		if err := Pin(src, paths, version); err != nil {
			return nil, err
		}
		if err := writeModule(out, src, paths[i], version); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// writeModule writes the module path in dir to the proxy out at version.
func writeModule(out, dir, path, version string) error {
	escaped, err := module.EscapePath(path)
	if err != nil {
		return err
	}
	at := filepath.Join(out, filepath.FromSlash(escaped), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(at, version+".zip"))
	if err != nil {
		return err
	}
	err = zip.CreateFromDir(f, module.Version{Path: path, Version: version}, dir)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("modproxy: zip %s: %w", path, err)
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	info, _ := json.Marshal(map[string]any{"Version": version, "Time": versionTime})
	for name, body := range map[string][]byte{version + ".mod": gomod, version + ".info": info, "list": []byte(version + "\n")} {
		if err := os.WriteFile(filepath.Join(at, name), body, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// versionTime is the time of every version Version names: the content, not the
// time, tells versions apart.
var versionTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Version is a pseudo-version (v0.0.1-0.20000101000000-HASH, above the v0.0.0 the
// checkout's go.mod files require) naming the content of the modules in dirs of root:
// every file's path and bytes, .git aside.
func Version(root string, dirs ...string) (string, error) {
	h := sha256.New()
	for _, d := range dirs {
		base := filepath.Join(root, d)
		var files []string
		err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
			switch {
			case err != nil:
				return err
			case e.IsDir() && e.Name() == ".git":
				return filepath.SkipDir
			case e.Type().IsRegular():
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("modproxy: version of %s: %w", d, err)
		}
		slices.Sort(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", fmt.Errorf("modproxy: version of %s: %w", d, err)
			}
			rel, _ := filepath.Rel(root, f)
			fmt.Fprintf(h, "%s\x00%d\x00", filepath.ToSlash(rel), len(b))
			h.Write(b)
		}
	}
	return module.PseudoVersion("", "v0.0.0", versionTime, hex.EncodeToString(h.Sum(nil))[:12]), nil
}

// Pin makes the go.mod in dir (a function's copy) require each module of paths it
// requires at version, without a replace directive for it: the copy builds against the proxy's
// modules exactly, as func's builders build it.
func Pin(dir string, paths []string, version string) error {
	path := filepath.Join(dir, "go.mod")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	f, err := modfile.Parse(path, b, nil)
	if err != nil {
		return fmt.Errorf("modproxy: %w", err)
	}
	for _, r := range slices.Clone(f.Require) {
		if !slices.Contains(paths, r.Mod.Path) {
			continue
		}
		if err := f.DropReplace(r.Mod.Path, ""); err != nil {
			return fmt.Errorf("modproxy: %w", err)
		}
		if err := f.AddRequire(r.Mod.Path, version); err != nil {
			return fmt.Errorf("modproxy: %w", err)
		}
	}
	f.Cleanup()
	out, err := f.Format()
	if err != nil {
		return fmt.Errorf("modproxy: %w", err)
	}
	return os.WriteFile(path, out, 0o644)
}
