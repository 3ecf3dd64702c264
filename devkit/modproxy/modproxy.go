// Package modproxy writes a file-based Go module proxy serving evalflow's own
// modules at one version, so that a function's directory builds alone — as the func
// CLI's builders see it, without the replace directives that point at ../../shared in
// the checkout.
package modproxy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

// Write replaces out with a file-based Go module proxy (GOPROXY=file://OUT) serving
// the modules in the directories dirs of the checkout root, each at version, zipped
// as the go command zips them (golang.org/x/mod/zip). It returns the modules' paths.
func Write(out, root, version string, dirs ...string) ([]string, error) {
	if len(dirs) == 0 {
		return nil, fmt.Errorf("modproxy: name the modules' directories, e.g. shared localjob devkit")
	}
	var paths []string
	if err := os.RemoveAll(out); err != nil {
		return nil, err
	}
	for _, d := range dirs {
		gomod, err := os.ReadFile(filepath.Join(root, d, "go.mod"))
		if err != nil {
			return nil, err
		}
		path := modfile.ModulePath(gomod)
		escaped, err := module.EscapePath(path)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(out, filepath.FromSlash(escaped), "@v")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(filepath.Join(dir, version+".zip"))
		if err != nil {
			return nil, err
		}
		err = zip.CreateFromDir(f, module.Version{Path: path, Version: version}, filepath.Join(root, d))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("modproxy: zip %s: %w", path, err)
		}
		info, _ := json.Marshal(map[string]any{"Version": version, "Time": time.Unix(0, 0).UTC()})
		for name, body := range map[string][]byte{version + ".mod": gomod, version + ".info": info, "list": []byte(version + "\n")} {
			if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
				return nil, err
			}
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// Forget removes the modules under prefix (e.g. github.com/evalflow) from the module
// cache modcache, extracted and downloaded: a build that must see the checkout as it
// is now fetches them again from the proxy, not what an earlier proxy served at the
// same version.
func Forget(modcache, prefix string) error {
	escaped, err := module.EscapePath(prefix)
	if err != nil {
		return err
	}
	for _, d := range []string{filepath.Join(modcache, filepath.FromSlash(escaped)), filepath.Join(modcache, "cache", "download", filepath.FromSlash(escaped))} {
		// The module cache makes its files read-only.
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("modproxy: forget %s: %w", prefix, err)
		}
	}
	return nil
}
