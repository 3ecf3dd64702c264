package release_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/yaml"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/local/release"
	evalflow "github.com/evalflow/evalflow/shared"
)

// make release against a real registry (docker-registry): every image is pushed and
// the manifest names each by its digest; built twice from one checkout it gives the
// same digests and the same file; it holds every part of evalflow on Knative (the
// OIDC flag, the EventPolicy, the delivery review's ClusterRole, the NetworkPolicies,
// a Service per function from its func.yaml, the Triggers, the Jobs' source) and
// neither a Secret nor job-watch's standing tick.
func TestAReleaseIsEveryImageByDigestAndTheSameTwice(t *testing.T) {
	registry := testserver.Registry(t, "", "")
	cfg := release.Config{Root: testserver.RepoRoot(), Registry: registry + "/evalflow", PlainHTTP: true,
		SandboxPython: testserver.SandboxPython(t)}
	ctx := context.Background()
	first, err := release.Build(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	second, err := release.Build(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if string(first.Manifest) != string(second.Manifest) {
		t.Errorf("built twice, the manifests differ:\n%s\n----\n%s", first.Manifest, second.Manifest)
	}
	want := []string{"evalflow-artifact", "evalflow-deploy", "evalflow-job-watch", "evalflow-runner", "evalflow-sandbox", "evalflow-start", "evalflow-verify", "redis", "registry"}
	for _, n := range want {
		ref := first.Images[n]
		if !strings.HasPrefix(ref, registry+"/evalflow/"+n+"@sha256:") || second.Images[n] != ref {
			t.Errorf("image %s: %q then %q; want %s/evalflow/%s@sha256:… twice alike", n, ref, second.Images[n], registry, n)
			continue
		}
		if r, err := name.ParseReference(ref, name.Insecure); err != nil {
			t.Errorf("%s: %v", ref, err)
		} else if _, err := remote.Head(r); err != nil {
			t.Errorf("%s is not in the registry: %v", ref, err)
		}
	}
	if len(first.Images) != len(want) {
		t.Errorf("images %v; want %v", first.Images, want)
	}

	docs := documents(t, first.Manifest)
	kinds := map[string]int{}
	for _, d := range docs {
		kinds[d.kind()]++
	}
	for kind, n := range map[string]int{"Namespace": 2, "Service.serving.knative.dev": len(evalflow.Steps), "Broker": 1, "SinkBinding": 1,
		"EventPolicy": 1, "ApiServerSource": 1, "Trigger": len(glob(t, "triggers/*.yaml"))} {
		if kinds[kind] != n {
			t.Errorf("%d %s; want %d (kinds: %v)", kinds[kind], kind, n, kinds)
		}
	}
	for _, kind := range []string{"Secret", "PingSource"} {
		if kinds[kind] != 0 {
			t.Errorf("the manifest holds a %s", kind)
		}
	}
	if kinds["NetworkPolicy"] == 0 || kinds["ClusterRole"] == 0 {
		t.Errorf("no NetworkPolicy or ClusterRole: %v", kinds)
	}
	features := find(t, docs, "ConfigMap", "config-features")
	if features.get("data", "authentication-oidc") != "enabled" {
		t.Errorf("config-features: %v", features)
	}
	find(t, docs, "ClusterRole", "evalflow-delivery-review")
	// Every image anywhere in the manifest is one of the release's, by digest.
	var images []string
	for _, line := range strings.Split(string(first.Manifest), "\n") {
		if _, image, ok := strings.Cut(line, "image: "); ok {
			images = append(images, image)
			if !slices.Contains(mapValues(first.Images), image) {
				t.Errorf("the manifest names image %q, not one the release built", image)
			}
		}
	}
	if len(images) != len(evalflow.Steps)+2 {
		t.Errorf("images in the manifest: %v", images)
	}
	// The functions, as func deploy renders their func.yaml.
	start := find(t, docs, "Service.serving.knative.dev", "evalflow-start")
	c := start.container(t)
	if env := envOf(c); env["REDIS_PASSWORD"] != "secret evalflow-redis/password" || env["EVALFLOW_DELIVERY_AUDIENCE"] != "serving.knative.dev/service/evalflow/evalflow-start" {
		t.Errorf("start's env: %v", env)
	}
	if start.get("spec", "template", "spec", "serviceAccountName") != "evalflow-start" ||
		start.get("spec", "template", "metadata", "annotations", "autoscaling.knative.dev/min-scale") != "0" ||
		start.get("metadata", "labels", "app.kubernetes.io/part-of") != "evalflow" {
		t.Errorf("start's Service: %v", start)
	}
	if mounts, _ := c["volumeMounts"].([]any); len(mounts) != 1 || mounts[0].(map[string]any)["mountPath"] != "/etc/evalflow/tokens" {
		t.Errorf("start's mounts: %v", c["volumeMounts"])
	}
	verify := find(t, docs, "Service.serving.knative.dev", "evalflow-verify")
	if verify.get("metadata", "labels", "networking.knative.dev/visibility") != "cluster-local" {
		t.Errorf("verify is not cluster-local: %v", verify.get("metadata", "labels"))
	}
	deployEnv := envOf(find(t, docs, "Service.serving.knative.dev", "evalflow-deploy").container(t))
	runner, sandbox := first.Images["evalflow-runner"], first.Images["evalflow-sandbox"]
	if got, want := deployEnv["EVALFLOW_JOB_IMAGE_DIGESTS"], "evalflow-runner@"+digestOf(runner)+",evalflow-sandbox@"+digestOf(sandbox); got != want {
		t.Errorf("deploy's EVALFLOW_JOB_IMAGE_DIGESTS %q; want %q", got, want)
	}
	if deployEnv["EVALFLOW_JOB_IMAGES"] != registry+"/evalflow" {
		t.Errorf("deploy's EVALFLOW_JOB_IMAGES %q", deployEnv["EVALFLOW_JOB_IMAGES"])
	}
}

// Every manifest of eventing/ and broker/ is in the release, or left out by name:
// a new one is not forgotten.
func TestEveryManifestIsReleasedOrLeftOutByName(t *testing.T) {
	named := append(append(append([]string(nil), release.Before...), release.After...), release.Left...)
	for _, file := range append(glob(t, "eventing/*.yaml"), glob(t, "broker/*.yaml")...) {
		rel, _ := filepath.Rel(testserver.RepoRoot(), file)
		if !slices.Contains(named, rel) {
			t.Errorf("%s is neither released nor left out (local/release Before, After, Left)", rel)
		}
	}
}

// A func.yaml setting a release cannot carry is refused, naming it.
func TestAFuncYAMLSettingTheReleaseCannotCarryIsRefused(t *testing.T) {
	for setting, insert := range map[string][2]string{
		"buildEnvs":     {"run:\n", "  buildEnvs:\n  - name: X\n    value: y\n"},
		"env:HOME":      {"  envs:\n", "  - name: X\n    value: '{{ env:HOME }}'\n"},
		"evalflow-typo": {"  envs:\n", "  - name: X\n    value: '{{ evalflow-typo:a:b }}'\n"},
	} {
		root := t.TempDir()
		for _, dir := range []string{"eventing", "broker", "triggers"} {
			os.Symlink(filepath.Join(testserver.RepoRoot(), dir), filepath.Join(root, dir))
		}
		for _, step := range evalflow.Steps {
			dir := filepath.Join(root, "functions", string(step.ID))
			os.MkdirAll(dir, 0o755)
			b, err := os.ReadFile(filepath.Join(testserver.RepoRoot(), "functions", string(step.ID), "func.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if step.ID == evalflow.StepVerify {
				b = []byte(strings.Replace(string(b), insert[0], insert[0]+insert[1], 1))
			}
			os.WriteFile(filepath.Join(dir, "func.yaml"), b, 0o644)
		}
		_, err := release.Render(release.Config{Root: root, Registry: "127.0.0.1:5000/evalflow"}, &release.Release{Images: map[string]string{}})
		if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(setting, "env:")) || !strings.Contains(err.Error(), "verify") {
			t.Errorf("func.yaml with %s: %v; want an error naming it and the function", setting, err)
		}
	}
}

type doc map[string]any

func documents(t *testing.T, manifest []byte) []doc {
	t.Helper()
	var docs []doc
	for _, part := range strings.Split(string(manifest), "\n---\n") {
		var d doc
		if err := yaml.UnmarshalStrict([]byte(part), &d); err != nil {
			t.Fatalf("the manifest: %v", err)
		}
		if len(d) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func (d doc) kind() string {
	k, _ := d["kind"].(string)
	if v, _ := d["apiVersion"].(string); strings.HasPrefix(v, "serving.knative.dev/") {
		return k + ".serving.knative.dev"
	}
	return k
}

func (d doc) get(path ...string) any {
	var v any = map[string]any(d)
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	return v
}

func (d doc) container(t *testing.T) map[string]any {
	cs, _ := d.get("spec", "template", "spec", "containers").([]any)
	if len(cs) != 1 {
		t.Fatalf("%v: %d containers", d.get("metadata", "name"), len(cs))
	}
	return cs[0].(map[string]any)
}

func find(t *testing.T, docs []doc, kind, name string) doc {
	t.Helper()
	for _, d := range docs {
		if d.kind() == kind && d.get("metadata", "name") == name {
			return d
		}
	}
	t.Fatalf("the manifest has no %s %s", kind, name)
	return nil
}

// envOf is a container's env: NAME → value, or "secret NAME/KEY".
func envOf(c map[string]any) map[string]string {
	env := map[string]string{}
	list, _ := c["env"].([]any)
	for _, e := range list {
		m := doc(e.(map[string]any))
		n, _ := m["name"].(string)
		if v, ok := m["value"].(string); ok {
			env[n] = v
		} else if ref, ok := m.get("valueFrom", "secretKeyRef").(map[string]any); ok {
			env[n] = "secret " + ref["name"].(string) + "/" + ref["key"].(string)
		}
	}
	return env
}

func glob(t *testing.T, pattern string) []string {
	files, err := filepath.Glob(filepath.Join(testserver.RepoRoot(), pattern))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: %v", pattern, err)
	}
	return files
}

func mapValues(m map[string]string) []string {
	var v []string
	for _, x := range m {
		v = append(v, x)
	}
	return v
}

func digestOf(ref string) string {
	_, d, _ := strings.Cut(ref, "@")
	return d
}
