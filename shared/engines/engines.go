// Package engines is the registry of evaluation engines: evalflow's built-in runner is
// one entry; external frameworks (lm-evaluation-harness, OpenCompass) are others,
// container images that follow the same adapter contract (job spec at /meta/job.json,
// results.json and samples.jsonl in the output directory). Each entry carries the JSON
// Schema of its config, which start validates.
package engines

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	evalflow "github.com/evalflow/evalflow/shared"
)

var english = message.NewPrinter(language.English)

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
	Resources Resources       `json:"resources"`
	Schema    json.RawMessage `json:"config_schema"`
	compiled  *jsonschema.Schema
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

// Default is the registry shipped in registry.json, parsed and its schemas compiled
// once per process (the registry is read-only).
var Default = sync.OnceValue(func() *Registry {
	r, err := Parse(registryJSON)
	if err != nil {
		panic(err) // registry.json is tested
	}
	return r
})

// Parse reads a registry and compiles each entry's schema.
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
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(e.Schema))
		if err != nil {
			return nil, fmt.Errorf("engines: %s: schema: %w", name, err)
		}
		c := jsonschema.NewCompiler()
		url := "engine://" + name + ".json"
		if err := c.AddResource(url, doc); err != nil {
			return nil, fmt.Errorf("engines: %s: schema: %w", name, err)
		}
		if e.compiled, err = c.Compile(url); err != nil {
			return nil, fmt.Errorf("engines: %s: schema: %w", name, err)
		}
		if e.Image == "" || len(e.Command) == 0 {
			return nil, fmt.Errorf("engines: %s: image and command are required", name)
		}
	}
	return &Registry{engines: m}, nil
}

// PulledFrom is e with its image under registry (HOST[:PORT]/PATH, where make images
// pushes it): the image's last path element and tag kept. An empty registry is e.
func (e *Engine) PulledFrom(registry string) *Engine {
	if registry == "" {
		return e
	}
	moved := *e
	moved.Image = strings.TrimSuffix(registry, "/") + "/" + path.Base(e.Image)
	return &moved
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

// Validate checks a request's engine and engine_config, naming the field at fault.
func (r *Registry) Validate(req *evalflow.Request) error {
	e, ok := r.Get(req.Engine)
	if !ok {
		return evalflow.Invalidf("engine", "unknown engine %q (known: %s)", req.Engine, strings.Join(r.Names(), ", "))
	}
	config := req.EngineConfig
	if len(config) == 0 {
		config = json.RawMessage("{}")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(config))
	if err != nil {
		return evalflow.Invalidf("engine_config", "not JSON")
	}
	err = e.compiled.Validate(doc)
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		field, msg := leaf(ve)
		return evalflow.Invalidf(field, "%s (engine %s)", msg, e.Name)
	}
	if err == nil && e.Name != evalflow.DefaultEngine && len(req.Datasets) > 0 {
		return evalflow.Invalidf("datasets", "engine %s takes what to evaluate from engine_config; leave datasets out", e.Name)
	}
	return err
}

// leaf is the deepest cause of a validation error: its field as engine_config.a.b and
// its message.
func leaf(ve *jsonschema.ValidationError) (string, string) {
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	field := "engine_config"
	for _, p := range ve.InstanceLocation {
		field += "." + p
	}
	return field, ve.ErrorKind.LocalizedString(english)
}
