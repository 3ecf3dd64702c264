// Package configschema checks a request's engine and engine_config against the engine
// registry: each engine's config against its JSON Schema (santhosh-tekuri/jsonschema,
// kept inside this package: its start-up work, compiling the JSON Schema drafts, is
// start's alone).
package configschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

var english = message.NewPrinter(language.English)

// Checker checks requests against a registry's engines.
type Checker struct {
	registry *engines.Registry
	schemas  map[string]*jsonschema.Schema
}

// New compiles the schema of each of registry's engines.
func New(registry *engines.Registry) (*Checker, error) {
	c := &Checker{registry: registry, schemas: map[string]*jsonschema.Schema{}}
	for _, name := range registry.Names() {
		e, _ := registry.Get(name)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(e.Schema))
		if err != nil {
			return nil, fmt.Errorf("engines: %s: schema: %w", name, err)
		}
		compiler := jsonschema.NewCompiler()
		url := "engine://" + name + ".json"
		if err := compiler.AddResource(url, doc); err != nil {
			return nil, fmt.Errorf("engines: %s: schema: %w", name, err)
		}
		if c.schemas[name], err = compiler.Compile(url); err != nil {
			return nil, fmt.Errorf("engines: %s: schema: %w", name, err)
		}
	}
	return c, nil
}

// Validate checks a request's engine and engine_config, naming the field at fault.
func (c *Checker) Validate(req *evalflow.Request) error {
	e, ok := c.registry.Get(req.Engine)
	if !ok {
		return evalflow.Invalidf("engine", "unknown engine %q (known: %s)", req.Engine, strings.Join(c.registry.Names(), ", "))
	}
	config := req.EngineConfig
	if len(config) == 0 {
		config = json.RawMessage("{}")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(config))
	if err != nil {
		return evalflow.Invalidf("engine_config", "not JSON")
	}
	err = c.schemas[e.Name].Validate(doc)
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
