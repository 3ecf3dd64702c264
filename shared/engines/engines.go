// Package engines is the registry of evaluation engines: evalflow's built-in runner is
// one entry; external frameworks (lm-evaluation-harness, OpenCompass) are others,
// container images that follow the same adapter contract (job spec at /meta/job.json,
// results.json and samples.jsonl in the output directory). Each entry carries the JSON
// Schema of its config, which start validates (package configschema: the schema
// library stays out of the steps that do not).
package engines

import (
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	evalflow "github.com/evalflow/evalflow/shared"
)

//go:embed registry.json
var registryJSON []byte

// Engine is one registry entry.
type Engine struct {
	Name        string   `json:"-"`
	Description string   `json:"description"`
	Image       string   `json:"image"`
	Command     []string `json:"command"`
	// Local says the engine also runs as a local process (local mode, a run without
	// a kubeconfig): LocalCommand, found beside the evalflow binary or on PATH, with
	// --job PATH. An adapter needs its engine installed (lm_eval, opencompass).
	Local        bool   `json:"local"`
	LocalCommand string `json:"local_command,omitempty"`
	// Resources are what the engine's Job container asks for: the built-in runner is
	// a small Go process; a Python engine with its libraries needs gigabytes.
	Resources Resources `json:"resources"`
	// Schema is the JSON Schema of its engine_config (configschema checks it).
	Schema json.RawMessage `json:"config_schema"`
}

// Resources are a container's CPU and memory requests and its memory limit, as
// Kubernetes quantities ("100m", "2Gi").
type Resources struct {
	CPU         string `json:"cpu"`
	Memory      string `json:"memory"`
	MemoryLimit string `json:"memory_limit"`
}

// Registry holds the engines.
type Registry struct{ engines map[string]*Engine }

// Default is the registry shipped in registry.json, parsed once per process (the
// registry is read-only).
var Default = sync.OnceValue(func() *Registry {
	r, err := Parse(registryJSON)
	if err != nil {
		panic(err) // registry.json is tested
	}
	return r
})

// Parse reads a registry.
func Parse(b []byte) (*Registry, error) {
	var m map[string]*Engine
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("engines: %w", err)
	}
	for name, e := range m {
		e.Name = name
		if e.Local && e.LocalCommand == "" {
			return nil, fmt.Errorf("engines: %s: runs locally, but names no local_command", name)
		}
		if e.Image == "" || len(e.Command) == 0 {
			return nil, fmt.Errorf("engines: %s: image and command are required", name)
		}
	}
	return &Registry{engines: m}, nil
}

// PulledFrom is e with its image under registry (HOST[:PORT]/PATH, where make images
// pushes it): the image's last path element and tag kept. An empty registry is e.
func (e *Engine) PulledFrom(registry string, digests map[string]string) *Engine {
	if registry == "" {
		return e
	}
	moved := *e
	moved.Image = Pinned(registry, e.Image, digests)
	return &moved
}

// Pinned is image under registry (Under), by digest where digests (an image's
// repository name, its last path element, → sha256:…) names one: a release's
// images, pulled as they were built.
func Pinned(registry, image string, digests map[string]string) string {
	ref := Under(registry, image)
	if registry == "" {
		return ref
	}
	repo, _ := RepoTag(image)
	if d, ok := digests[repo]; ok {
		return strings.TrimSuffix(registry, "/") + "/" + repo + "@" + d
	}
	return ref
}

// RepoTag splits an image's last path element into its repository name and tag
// ("latest" where it names none): ghcr.io/evalflow/evalflow-runner:v0.1.0 →
// evalflow-runner, v0.1.0.
func RepoTag(image string) (repo, tag string) {
	repo, tag, _ = strings.Cut(path.Base(image), ":")
	return repo, cmp.Or(tag, "latest")
}

// ParseDigests reads a list of pinned images, "NAME@sha256:HEX,…" (NAME an image's
// repository name), as Pinned takes it.
func ParseDigests(list string) (map[string]string, error) {
	digests := map[string]string{}
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		repo, d, ok := strings.Cut(item, "@")
		hex, sha := strings.CutPrefix(d, "sha256:")
		if !ok || repo == "" || strings.Contains(repo, "/") || !sha || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("%q: want NAME@sha256:<64 hex digits>", item)
		}
		digests[repo] = d
	}
	return digests, nil
}

// Under is image pulled from under registry (HOST[:PORT]/PATH): its last path element
// and tag kept. An empty registry is image.
func Under(registry, image string) string {
	if registry == "" {
		return image
	}
	return strings.TrimSuffix(registry, "/") + "/" + path.Base(image)
}

// WithResources is e with the resources r sets (a deployment's own, see
// kube.Options.Resources); what r leaves empty stays e's.
func (e *Engine) WithResources(r Resources) *Engine {
	if r == (Resources{}) {
		return e
	}
	tuned := *e
	tuned.Resources.CPU = cmp.Or(r.CPU, e.Resources.CPU)
	tuned.Resources.Memory = cmp.Or(r.Memory, e.Resources.Memory)
	tuned.Resources.MemoryLimit = cmp.Or(r.MemoryLimit, e.Resources.MemoryLimit)
	return &tuned
}

// Names lists the engines, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.engines))
	for n := range r.engines {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Get returns an engine ("" is the built-in runner).
func (r *Registry) Get(name string) (*Engine, bool) {
	if name == "" {
		name = evalflow.DefaultEngine
	}
	e, ok := r.engines[name]
	return e, ok
}
