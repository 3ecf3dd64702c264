// Command evalflow-modproxy writes a file-based Go module proxy (GOPROXY=file://DIR)
// serving evalflow's own modules at one version, so that a function's directory builds
// alone — as the func CLI's builders see it, without the replace directives that point
// at ../../shared in the checkout:
//
//	evalflow-modproxy -out .state/modproxy -version v0.0.0 shared localjob devkit
//
// Each module is zipped from its directory under the checkout (golang.org/x/mod/zip,
// the go command's own format), with its go.mod, .info and list files.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

func main() {
	out := flag.String("out", ".state/modproxy", "the proxy's directory (replaced)")
	version := flag.String("version", "v0.0.0", "the version every module is served at")
	root := flag.String("root", ".", "the checkout")
	flag.Parse()
	if err := write(*out, *root, *version, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-modproxy:", err)
		os.Exit(1)
	}
}

func write(out, root, version string, dirs []string) error {
	if len(dirs) == 0 {
		return fmt.Errorf("name the modules' directories, e.g. shared localjob devkit")
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	for _, d := range dirs {
		gomod, err := os.ReadFile(filepath.Join(root, d, "go.mod"))
		if err != nil {
			return err
		}
		path := modfile.ModulePath(gomod)
		escaped, err := module.EscapePath(path)
		if err != nil {
			return err
		}
		dir := filepath.Join(out, filepath.FromSlash(escaped), "@v")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(dir, version+".zip"))
		if err != nil {
			return err
		}
		err = zip.CreateFromDir(f, module.Version{Path: path, Version: version}, filepath.Join(root, d))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("zip %s: %w", path, err)
		}
		info, _ := json.Marshal(map[string]any{"Version": version, "Time": time.Unix(0, 0).UTC()})
		for name, body := range map[string][]byte{version + ".mod": gomod, version + ".info": info, "list": []byte(version + "\n")} {
			if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
				return err
			}
		}
		fmt.Println(strings.TrimSpace(path + " " + version))
	}
	return nil
}
