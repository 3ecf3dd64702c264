package release

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	evalflow "github.com/evalflow/evalflow/shared"
	"sigs.k8s.io/yaml"
)

// The release manifest: the checkout's manifests and the functions' Services, in the
// order they are applied.

// Before and After are the checkout's manifests in the release, before and after the
// functions' Services: what the functions need first (namespaces, flags, RBAC,
// policies, Redis and the registry, the broker, the SinkBinding that gives them K_SINK
// as they are admitted), and what delivers to them. Left out is
// eventing/pingsource.yaml (Left): job-watch's tick, which start makes while runs are
// in flight.
var (
	Before = []string{"eventing/namespace.yaml", "eventing/config-features.yaml", "eventing/rbac.yaml",
		"eventing/networkpolicies.yaml", "eventing/redis.yaml", "eventing/registry.yaml", "broker/broker.yaml",
		"eventing/sinkbinding.yaml", "eventing/eventpolicy.yaml"}
	After = []string{"triggers/*.yaml", "eventing/jobsource.yaml"}
	Left  = []string{"eventing/pingsource.yaml"}
)

// header opens the manifest.
const header = `# evalflow's release manifest (make release; local/release). Install it with
# evalflow install -f evalflow.yaml, which also makes the Secrets it refers to
# (docs/install.md). Every image is named by digest; it holds no Secret.
`

// manifest renders the release manifest of what was built.
func (b *builder) manifest(_ context.Context) error {
	m, err := Render(b.cfg, b.release)
	b.release.Manifest = m
	return err
}

// Render renders the manifest of a release whose images (and data) rel names.
func Render(cfg Config, rel *Release) ([]byte, error) {
	cfg = cfg.withDefaults()
	r := renderer{cfg: cfg, rel: rel}
	// The functions first: a func.yaml is the likeliest to be refused.
	var services []map[string]any
	for _, step := range evalflow.Steps {
		f, err := readFunc(filepath.Join(cfg.Root, "functions", string(step.ID)))
		if err != nil {
			return nil, err
		}
		svc, err := f.service(rel.Images[FunctionImage(step.ID)], append(r.settings(step.ID), cfg.Env[string(step.ID)]...))
		if err != nil {
			return nil, err
		}
		services = append(services, svc)
	}
	before, err := r.objects(Before)
	if err != nil {
		return nil, err
	}
	after, err := r.objects(After)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString(header)
	for _, d := range slices.Concat(before, services, after) {
		y, err := yaml.Marshal(d)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return out.Bytes(), nil
}

type renderer struct {
	cfg Config
	rel *Release
}

// settings are what the release sets for step beyond its func.yaml: for deploy, where
// the Jobs' images are, by digest, and the published data.
func (r renderer) settings(step evalflow.StepID) []string {
	if step != evalflow.StepDeploy {
		return nil
	}
	s := []string{"EVALFLOW_JOB_IMAGES=" + r.cfg.PodRegistry, "EVALFLOW_JOB_IMAGE_DIGESTS=" + r.rel.jobDigests()}
	if r.rel.Data != "" {
		s = append(s, "EVALFLOW_DATA_ARTIFACT="+r.rel.Data)
	}
	return s
}

// objects reads the checkout's manifests matching patterns, in order (each pattern's
// files in name order), with Redis's and the registry's Deployments running the images
// built for them.
func (r renderer) objects(patterns []string) ([]map[string]any, error) {
	var files []string
	for _, pattern := range patterns {
		matched, err := filepath.Glob(filepath.Join(r.cfg.Root, pattern))
		if err != nil || len(matched) == 0 {
			return nil, fmt.Errorf("no manifest %s under %s", pattern, r.cfg.Root)
		}
		files = append(files, matched...)
	}
	var objs []map[string]any
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		for _, doc := range strings.Split(string(raw), "\n---") {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			if len(obj) == 0 {
				continue
			}
			if err := r.pin(obj); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

// pin sets the image of Redis's and the registry's Deployments to the one built.
func (r renderer) pin(obj map[string]any) error {
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if obj["kind"] != "Deployment" {
		return nil
	}
	image, ok := r.rel.Images[name]
	if !ok {
		return fmt.Errorf("Deployment %s: no image is built for it", name)
	}
	spec, _ := obj["spec"].(map[string]any)
	template, _ := spec["template"].(map[string]any)
	pod, _ := template["spec"].(map[string]any)
	containers, _ := pod["containers"].([]any)
	if len(containers) != 1 {
		return fmt.Errorf("Deployment %s: want one container, have %d", name, len(containers))
	}
	containers[0].(map[string]any)["image"] = image
	return nil
}
