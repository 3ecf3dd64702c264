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
