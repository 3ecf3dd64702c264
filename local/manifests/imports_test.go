package manifests

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFunctionsKeepLibrariesInTheirAdapters: a step function imports the domain and
// the adapters (oci, kube, runstore), never the libraries those wrap: oras-go and the
// OCI image-spec stay inside shared/oci, client-go inside shared/kube, go-redis
// inside runstore.
func TestFunctionsKeepLibrariesInTheirAdapters(t *testing.T) {
	for _, fn := range []string{"start", "verify", "deploy", "watch", "artifact"} {
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
