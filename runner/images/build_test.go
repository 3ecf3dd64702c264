package images_test

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/evalflow/evalflow/devkit/images"
	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

// The runner's image, built without a Docker engine and pushed to a real registry,
// pulled back as a node would: its config runs the runner as the non-root user, its
// filesystem holds the users, the CA certificates and the runner, and that runner
// runs. Built twice, it has the same digest.
func TestTheRunnerImageIsBuiltWithoutDocker(t *testing.T) {
	addr := testserver.Registry(t, "", "")
	e, _ := engines.Default().Get(evalflow.DefaultEngine)
	bin := filepath.Join(t.TempDir(), "evalflow-runner")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/evalflow-runner")
	build.Dir, build.Env = "..", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	spec := images.Spec{Binary: bin, Path: e.Command[0], OS: "linux", Architecture: runtime.GOARCH}
	img, err := images.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref := addr + "/evalflow/evalflow-runner:test"

	digest, err := images.Push(img, ref)

	if err != nil {
		t.Fatal(err)
	}
	again, _ := images.Build(spec)
	if d, _ := again.Digest(); d != digest {
		t.Errorf("built twice: %s then %s", digest, d)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	pulled, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pulled.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != e.Command[0] || cfg.OS != "linux" {
		t.Fatalf("config %+v", cfg.Config)
	}
	files := extract(t, pulled)
	if !strings.Contains(string(files["etc/passwd"]), "nonroot:x:65532:65532:") || len(files["etc/ssl/certs/ca-certificates.crt"]) == 0 {
		t.Fatalf("the base lacks the non-root user or the CA certificates: %q", files["etc/passwd"])
	}
	runner := filepath.Join(t.TempDir(), "runner")
	os.WriteFile(runner, files[e.Command[0][1:]], 0o755)
	out, err := exec.Command(runner, "--job", filepath.Join(t.TempDir(), "missing.json")).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "job spec") {
		t.Fatalf("the image's runner: %v\n%s", err, out)
	}
}

// extract reads an image's flattened filesystem: each regular file's content by path.
func extract(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[strings.TrimPrefix(h.Name, "/")] = b
		}
	}
}
