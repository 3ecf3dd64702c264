package kube

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	evalflow "github.com/evalflow/evalflow/shared"
)

// pingSources are Knative's PingSources.
var pingSources = schema.GroupVersionResource{Group: "sources.knative.dev", Version: "v1", Resource: "pingsources"}

// Ticker is a PingSource of evalflow's own cluster, made and removed on demand.
type Ticker struct {
	source    evalflow.TickSource
	namespace string
	client    dynamic.ResourceInterface
}

// OwnTicker is tick, in evalflow's own cluster reached from source (as for Own), in
// the namespace of its ServiceAccount or kubeconfig: where the functions and the
// broker are.
func OwnTicker(source string, tick evalflow.TickSource) (*Ticker, error) {
	rest, namespace, err := ownConfig(source)
	if err != nil {
		return nil, err
	}
	rest.Timeout = 30 * time.Second
	rest.UserAgent = "evalflow"
	client, err := dynamic.NewForConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("kube: ticker %s: %w", tick.Name, err)
	}
	return &Ticker{source: tick, namespace: namespace, client: client.Resource(pingSources).Namespace(namespace)}, nil
}

// PingSource is tick as the PingSource object in namespace.
func PingSource(tick evalflow.TickSource, namespace string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "sources.knative.dev/v1",
		"kind":       "PingSource",
		"metadata": map[string]any{"name": tick.Name, "namespace": namespace,
			"labels": map[string]any{"app.kubernetes.io/part-of": "evalflow"}},
		"spec": map[string]any{
			"schedule":    tick.Schedule,
			"contentType": "application/json",
			"data":        tick.Data,
			"sink": map[string]any{"ref": map[string]any{
				"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": tick.Broker}},
		},
	}}
}

// Ensure makes the PingSource where it is absent.
func (t *Ticker) Ensure(ctx context.Context) error {
	_, err := t.client.Create(ctx, PingSource(t.source, t.namespace), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube: make the PingSource %s/%s: %w", t.namespace, t.source.Name, err)
	}
	return nil
}

// Remove deletes the PingSource where it is present.
func (t *Ticker) Remove(ctx context.Context) error {
	err := t.client.Delete(ctx, t.source.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kube: remove the PingSource %s/%s: %w", t.namespace, t.source.Name, err)
	}
	return nil
}
