package manifests

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/local/stack"
)

// TestFunctionsKeepLibrariesInTheirAdapters: a step function imports the domain and
// the adapters (oci, kube, runstore), never the libraries those wrap: oras-go and the
// OCI image-spec stay inside shared/oci, client-go inside shared/kube, go-redis
// inside runstore.
func TestFunctionsKeepLibrariesInTheirAdapters(t *testing.T) {
	for _, fn := range stack.Functions {
		dir := filepath.Join("..", "..", "functions", fn)
		out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, dir).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", fn, err, out)
		}
		for _, imp := range strings.Fields(string(out)) {
			for _, lib := range []string{"oras.land/", "github.com/opencontainers/", "k8s.io/", "github.com/redis/"} {
				if strings.HasPrefix(imp, lib) {
					t.Errorf("functions/%s imports %s", fn, imp)
				}
			}
		}
	}
}

// TestEveryStepIsAFunctionDirectory: evalflow.Steps is the one list of steps. The local
// stack reads it; the Makefile and the cluster read functions/*, which must hold one
// directory per step, named by its id, whose func.yaml names its Knative Service.
func TestEveryStepIsAFunctionDirectory(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("..", "..", "functions", "*", "func.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dirs {
		got = append(got, filepath.Base(filepath.Dir(d)))
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		if want := "name: evalflow-" + filepath.Base(filepath.Dir(d)); !strings.Contains(string(b), want+"\n") {
			t.Errorf("%s does not say %q", d, want)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(stack.Functions))) {
		t.Fatalf("functions/ holds %v; the steps are %v", got, stack.Functions)
	}
}
