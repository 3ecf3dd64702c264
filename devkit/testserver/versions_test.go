package testserver_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
)

// The tests find what hack/*.sh built where the scripts cached it, by the versions
// in the code: a script's default that moved alone would leave the tests skipping
// (or on an old build) while make test builds the new one.
func TestTheScriptsBuildTheVersionsTheCodeLooksFor(t *testing.T) {
	for _, c := range []struct{ script, variable, want string }{
		{"cluster-tools.sh", "KUBE_VERSION", localserver.KubeVersion},
		{"cluster-tools.sh", "ETCD_VERSION", localserver.EtcdVersion},
		{"cluster-tools.sh", "COREDNS_VERSION", localserver.CoreDNSVersion},
		{"cluster-tools.sh", "TRAEFIK_VERSION", localserver.TraefikVersion},
		{"install-knative.sh", "KNATIVE_VERSION", knative.EventingVersion},
		{"install-knative.sh", "KO_VERSION", knative.KoVersion},
		{"install-func.sh", "FUNC_VERSION", testserver.FuncVersion},
	} {
		b, err := os.ReadFile(filepath.Join(testserver.RepoRoot(), "hack", c.script))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`\$\{` + c.variable + `:-([^}]+)\}`).FindSubmatch(b)
		if m == nil {
			t.Errorf("hack/%s has no default for %s", c.script, c.variable)
		} else if string(m[1]) != c.want {
			t.Errorf("hack/%s builds %s %s; the code looks for %s", c.script, c.variable, m[1], c.want)
		}
	}
	// The cache directories, as the scripts name them.
	b, _ := os.ReadFile(filepath.Join(testserver.RepoRoot(), "hack", "cluster-tools.sh"))
	if !regexp.MustCompile(`DIR="\$CACHE/cluster-k8s-v\$K8S-etcd-v\$ETCD-coredns-v\$COREDNS-traefik-v\$TRAEFIK"`).Match(b) ||
		filepath.Base(localserver.ClusterToolsDir()) != "cluster-k8s-v"+localserver.KubeVersion+"-etcd-v"+localserver.EtcdVersion+
			"-coredns-v"+localserver.CoreDNSVersion+"-traefik-v"+localserver.TraefikVersion {
		t.Errorf("hack/cluster-tools.sh and localserver.ClusterToolsDir name different directories")
	}
	b, _ = os.ReadFile(filepath.Join(testserver.RepoRoot(), "hack", "install-func.sh"))
	if !regexp.MustCompile(`/`+regexp.QuoteMeta("func-$V-hostplatform")+`/func"`).Match(b) || testserver.FuncBuild != "func-"+testserver.FuncVersion+"-hostplatform" {
		t.Errorf("hack/install-func.sh and testserver.FuncBuild name different directories")
	}
}
