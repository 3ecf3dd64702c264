package release

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// A function's Knative Service, from its func.yaml, as func deploy makes it.

// funcYAML is what evalflow's func.yaml files say, read strictly: a setting this
// package does not carry into the Service is refused, not dropped.
type funcYAML struct {
	SpecVersion string `json:"specVersion"`
	Name        string `json:"name"`
	Runtime     string `json:"runtime"`
	Created     string `json:"created"`
	Invoke      string `json:"invoke"`
	Run         struct {
		Envs    []struct{ Name, Value string } `json:"envs"`
		Volumes []struct {
			Secret    string `json:"secret"`
			ConfigMap string `json:"configMap"`
			Path      string `json:"path"`
		} `json:"volumes"`
	} `json:"run"`
	Deploy struct {
		Namespace          string                        `json:"namespace"`
		ServiceAccountName string                        `json:"serviceAccountName"`
		Labels             []struct{ Key, Value string } `json:"labels"`
		Annotations        map[string]string             `json:"annotations"`
		Options            struct {
			Scale struct {
				Min *int `json:"min"`
				Max *int `json:"max"`
			} `json:"scale"`
		} `json:"options"`
		HealthEndpoints struct {
			Liveness  string `json:"liveness"`
			Readiness string `json:"readiness"`
		} `json:"healthEndpoints"`
	} `json:"deploy"`
}

// readFunc reads dir/func.yaml.
func readFunc(dir string) (*funcYAML, error) {
	b, err := os.ReadFile(filepath.Join(dir, "func.yaml"))
	if err != nil {
		return nil, err
	}
	var f funcYAML
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "func.yaml"), err)
	}
	if f.Runtime != "go" || f.Invoke != "http" || f.Name == "" || f.Deploy.Namespace == "" {
		return nil, fmt.Errorf("%s: want a named Go HTTP function with a namespace (runtime %q, invoke %q)", filepath.Join(dir, "func.yaml"), f.Runtime, f.Invoke)
	}
	return &f, nil
}

// service is the Knative Service of function f running image, with extra settings
// (NAME=VALUE) after its own, each replacing one of its own of the same name. As func deploy renders it: func.yaml's labels on the
// Service and its revisions (with func's own function.knative.dev labels), each env
// a value or a Secret's key ({{ secret:NAME:KEY }}), each volume a Secret or
// ConfigMap mounted at its path, the health endpoints as probes, the scale bounds as
// autoscaling annotations, and func's restricted security context.
func (f *funcYAML) service(image string, extra []string) (map[string]any, error) {
	labels := map[string]any{"function.knative.dev": "true", "function.knative.dev/name": f.Name, "function.knative.dev/runtime": f.Runtime}
	for _, l := range f.Deploy.Labels {
		labels[l.Key] = l.Value
	}
	annotations := map[string]any{}
	for k, v := range f.Deploy.Annotations {
		annotations[k] = v
	}
	revision := map[string]any{}
	for k, v := range annotations {
		revision[k] = v
	}
	if s := f.Deploy.Options.Scale; s.Min != nil {
		revision["autoscaling.knative.dev/min-scale"] = strconv.Itoa(*s.Min)
	}
	if s := f.Deploy.Options.Scale; s.Max != nil {
		revision["autoscaling.knative.dev/max-scale"] = strconv.Itoa(*s.Max)
	}
	var env []any
	for _, e := range f.Run.Envs {
		v, err := envVar(e.Name, e.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: env %s: %w", f.Name, e.Name, err)
		}
		env = append(env, v)
	}
	for _, e := range extra {
		name, value, ok := strings.Cut(e, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s: setting %q: want NAME=VALUE", f.Name, e)
		}
		v := map[string]any{"name": name, "value": value}
		if i := slices.IndexFunc(env, func(e any) bool { return e.(map[string]any)["name"] == name }); i >= 0 {
			env[i] = v // a later setting replaces an earlier one of the same name
			continue
		}
		env = append(env, v)
	}
	var volumes, mounts []any
	for _, v := range f.Run.Volumes {
		var name string
		var source map[string]any
		switch {
		case v.Secret != "" && v.ConfigMap == "":
			name, source = "secret-"+v.Secret, map[string]any{"secret": map[string]any{"secretName": v.Secret}}
		case v.ConfigMap != "" && v.Secret == "":
			name, source = "config-map-"+v.ConfigMap, map[string]any{"configMap": map[string]any{"name": v.ConfigMap}}
		default:
			return nil, fmt.Errorf("%s: a volume at %q: want a secret or a configMap", f.Name, v.Path)
		}
		source["name"] = name
		volumes = append(volumes, source)
		mounts = append(mounts, map[string]any{"name": name, "mountPath": v.Path})
	}
	probe := func(path string) map[string]any { return map[string]any{"httpGet": map[string]any{"path": path}} }
	container := map[string]any{
		"image": image,
		"securityContext": map[string]any{"runAsNonRoot": true, "allowPrivilegeEscalation": false,
			"capabilities": map[string]any{"drop": []any{"ALL"}}, "seccompProfile": map[string]any{"type": "RuntimeDefault"}},
		"livenessProbe":  probe(cmp.Or(f.Deploy.HealthEndpoints.Liveness, "/health/liveness")),
		"readinessProbe": probe(cmp.Or(f.Deploy.HealthEndpoints.Readiness, "/health/readiness")),
	}
	if env != nil {
		container["env"] = env
	}
	if mounts != nil {
		container["volumeMounts"] = mounts
	}
	pod := map[string]any{"containers": []any{container}}
	if f.Deploy.ServiceAccountName != "" {
		pod["serviceAccountName"] = f.Deploy.ServiceAccountName
	}
	if volumes != nil {
		pod["volumes"] = volumes
	}
	meta := map[string]any{"name": f.Name, "namespace": f.Deploy.Namespace, "labels": labels}
	if len(annotations) > 0 {
		meta["annotations"] = annotations
	}
	template := map[string]any{"labels": labels}
	if len(revision) > 0 {
		template["annotations"] = revision
	}
	return map[string]any{
		"apiVersion": "serving.knative.dev/v1",
		"kind":       "Service",
		"metadata":   meta,
		"spec":       map[string]any{"template": map[string]any{"metadata": template, "spec": pod}},
	}, nil
}

// envVar is a func.yaml env as a container's: a value, or {{ secret:NAME:KEY }} and
// {{ configMap:NAME:KEY }} as a reference. {{ env:NAME }}, which func fills from the
// deploying machine, has no place in a release.
func envVar(name, value string) (map[string]any, error) {
	if name == "" {
		return nil, fmt.Errorf("no name (func's whole-Secret envs are not used by evalflow)")
	}
	inner, ok := strings.CutPrefix(strings.TrimSpace(value), "{{")
	if !ok {
		return map[string]any{"name": name, "value": value}, nil
	}
	parts := strings.Split(strings.TrimSpace(strings.TrimSuffix(inner, "}}")), ":")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%q: want {{ secret:NAME:KEY }} or {{ configMap:NAME:KEY }}", value)
	}
	ref := map[string]any{"name": parts[1], "key": parts[2]}
	switch parts[0] {
	case "secret":
		return map[string]any{"name": name, "valueFrom": map[string]any{"secretKeyRef": ref}}, nil
	case "configMap":
		return map[string]any{"name": name, "valueFrom": map[string]any{"configMapKeyRef": ref}}, nil
	}
	return nil, fmt.Errorf("%q: want {{ secret:NAME:KEY }} or {{ configMap:NAME:KEY }}", value)
}
