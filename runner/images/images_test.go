// Package images holds the engines' container images (one Dockerfile each); its test
// ties them to the engine registry, which deploy builds Jobs from.
package images

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/shared/engines"
)

// TestEveryEngineImageIsBuiltHere checks, for each registry entry, that its local
// command is a command of this module, and that a Dockerfile here builds its image: named after the image, building a command of this module
// to the path the entry runs, and installing the engine at the version the image tag
// names. The images themselves cannot be built on machines without a Docker engine.
func TestEveryEngineImageIsBuiltHere(t *testing.T) {
	r := engines.Default()
	build := regexp.MustCompile(`go build .*-o (\S+) \./(cmd/\S+)`)
	for _, name := range r.Names() {
		e, _ := r.Get(name)
		if e.Local {
			if _, err := os.Stat(filepath.Join("..", "cmd", e.LocalCommand, "main.go")); err != nil {
				t.Errorf("%s: runs locally as %q, which is not a command here: %v", name, e.LocalCommand, err)
			}
		}
		repo, tag, _ := strings.Cut(path.Base(e.Image), ":")
		b, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
		if err != nil {
			t.Errorf("%s: no Dockerfile for image %s: %v", name, e.Image, err)
			continue
		}
		dockerfile := string(b)
		m := build.FindStringSubmatch(dockerfile)
		if m == nil {
			t.Errorf("%s: the Dockerfile builds no command", name)
			continue
		}
		if m[1] != e.Command[0] {
			t.Errorf("%s: the Dockerfile builds %s, the registry runs %s", name, m[1], e.Command[0])
		}
		if _, err := os.Stat(filepath.Join("..", m[2], "main.go")); err != nil {
			t.Errorf("%s: the Dockerfile builds %s, which is not a command here: %v", name, m[2], err)
		}
		for _, dir := range localReplaces(t) {
			if !strings.Contains(dockerfile, "COPY "+dir+"/ "+dir+"/") {
				t.Errorf("%s: the Dockerfile does not copy %s/, which the runner's go.mod replaces locally", name, dir)
			}
		}
		if pip := regexp.MustCompile(`pip install [^"]*"([a-z-]+)(?:\[[a-z]+\])?==([0-9.]+)"`).FindStringSubmatch(dockerfile); pip != nil && pip[2] != tag {
			t.Errorf("%s: the image is tagged %s but installs %s %s", name, tag, pip[1], pip[2])
		}
	}
}

// localReplaces are the checkout's directories the runner module's go.mod replaces
// modules with (../shared, ../devkit): a build from the checkout needs each.
func localReplaces(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, m := range regexp.MustCompile(`=> \.\./([a-z-]+)`).FindAllStringSubmatch(string(b), -1) {
		dirs = append(dirs, m[1])
	}
	if len(dirs) == 0 {
		t.Fatal("the runner's go.mod replaces nothing locally: the test reads it wrong")
	}
	return dirs
}
