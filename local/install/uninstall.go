package install

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/evalflow/evalflow/devkit/knative"
	evalflow "github.com/evalflow/evalflow/shared"
)

// UninstallConfig says what to take off where.
type UninstallConfig struct {
	// Kubeconfig is the cluster's (its current context).
	Kubeconfig []byte
	// Manifest is the release manifest that was installed.
	Manifest []byte
	// DeleteData also deletes the runs' data: the PersistentVolumeClaims of Redis and
	// the results registry, the Secrets (the seal key that reads the runs), and the
	// namespace holding them. Without it they stay, and installing again finds them.
	DeleteData bool
	// Log receives what uninstalling does; nil: nothing.
	Log io.Writer
}

// Uninstall takes off the cluster what Install of the manifest made, the later stages
// first, and what runs made there (job-watch's tick, the Jobs' namespace), and waits
// until it is gone. Objects of the manifest in another's namespace (Knative's feature
// flags) are settings on that other's object: they stay.
func Uninstall(ctx context.Context, cfg UninstallConfig) error {
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	objs, err := knative.Objects(string(cfg.Manifest))
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	c, err := knative.Connect(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	byStage, err := staged(objs)
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	doomed := []*unstructured.Unstructured{object("sources.knative.dev/v1", "PingSource", Namespace, evalflow.Tick.Name)}
	own := ownNamespaces(objs)
	for n := len(byStage) - 1; n >= 0; n-- {
		for _, o := range byStage[n] {
			if kept(o, own, cfg.DeleteData) {
				continue
			}
			doomed = append(doomed, o)
		}
	}
	if cfg.DeleteData {
		secrets, err := c.Kube.CoreV1().Secrets(Namespace).List(ctx, listPartOf)
		if err != nil {
			return fmt.Errorf("uninstall: secrets: %w", err)
		}
		for _, s := range secrets.Items {
			doomed = append(doomed, object("v1", "Secret", Namespace, s.Name))
		}
	}
	fmt.Fprintf(log, "uninstall: deleting %d objects\n", len(doomed))
	if err := c.Delete(ctx, doomed...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	if err := c.Gone(ctx, 3*time.Minute, doomed...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	return nil
}

// kept says whether uninstalling leaves o: another's object, or, unless the data goes
// too, the data and what reads it.
func kept(o *unstructured.Unstructured, own []string, deleteData bool) bool {
	if ns := o.GetNamespace(); ns != "" && !slices.Contains(own, ns) {
		return true
	}
	if deleteData {
		return false
	}
	switch o.GetKind() {
	case "PersistentVolumeClaim":
		return true
	case "Namespace":
		return o.GetName() == Namespace // it holds the claims and the Secrets
	}
	return false
}

// listPartOf selects what install made beside the manifest: its Secrets.
var listPartOf = metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=evalflow"}

// ownNamespaces are the namespaces the manifest makes.
func ownNamespaces(objs []*unstructured.Unstructured) []string {
	var ns []string
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			ns = append(ns, o.GetName())
		}
	}
	return ns
}

func object(apiVersion, kind, namespace, name string) *unstructured.Unstructured {
	o := &unstructured.Unstructured{}
	o.SetAPIVersion(apiVersion)
	o.SetKind(kind)
	o.SetNamespace(namespace)
	o.SetName(name)
	return o
}
