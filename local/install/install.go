// Package install puts an evalflow release manifest (local/release, make release) on a
// cluster that runs Knative Serving and Eventing, and takes it off again: evalflow
// install and evalflow uninstall.
//
// Install applies the manifest server-side, in stages, each waited for before the next:
// the namespaces, feature flags, RBAC and NetworkPolicies; the Secrets the manifest
// refers to, generated where absent (kept where present: runs sealed with a key stay
// readable); Redis and the results registry; the broker, the SinkBinding and the
// EventPolicy; the functions; the Triggers and the sources. Installing again updates in
// place.
package install

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/evalflow/evalflow/devkit/knative"
)

// Namespace is where evalflow's functions, Redis, registry and broker run;
// JobNamespace where the Jobs of runs without a kubeconfig run (eventing/namespace.yaml).
const (
	Namespace    = "evalflow"
	JobNamespace = "evalflow-jobs"
)

// Config says what to install where.
type Config struct {
	// Kubeconfig is the cluster's (its current context).
	Kubeconfig []byte
	// Manifest is the release manifest.
	Manifest []byte
	// IngressPort is the port the cluster's public ingress answers this machine on,
	// when not the URL's own (a port-forward, a node's entrypoint); "" keeps the URL.
	IngressPort string
	// Log receives what installing does; nil: nothing.
	Log io.Writer
}

// Installation is what an install made.
type Installation struct {
	// StartURL is start's URL as this machine reaches it.
	StartURL string
	// Revisions maps each function's Service (evalflow-start, ...) to its Ready
	// revision, and Images to the image it runs.
	Revisions, Images map[string]string
	// OperatorToken is an operator's token of the tokens Secret ("" where the Secret,
	// the operator's own, holds none).
	OperatorToken string
}

// stage is one step of an install: the kinds of the manifest it applies.
type stage struct {
	what  string
	kinds []string // apiVersion's group "/" kind
	after func(*installer, context.Context) error
	// within is how long what it applied may take to be Ready.
	within time.Duration
}

// stages are an install's steps, in order; every object of the manifest is of a kind
// one of them names.
var stages = []stage{
	{what: "namespaces, feature flags, RBAC and NetworkPolicies", within: time.Minute,
		kinds: []string{"/Namespace", "/ConfigMap", "/ServiceAccount", "rbac.authorization.k8s.io/ClusterRole",
			"rbac.authorization.k8s.io/ClusterRoleBinding", "rbac.authorization.k8s.io/Role", "rbac.authorization.k8s.io/RoleBinding",
			"networking.k8s.io/NetworkPolicy"}},
	{what: "secrets", after: (*installer).secrets},
	{what: "Redis and the results registry", within: 3 * time.Minute,
		kinds: []string{"/PersistentVolumeClaim", "apps/Deployment", "/Service"}},
	{what: "the broker", within: 2 * time.Minute, after: (*installer).asyncChannel,
		kinds: []string{"eventing.knative.dev/Broker", "sources.knative.dev/SinkBinding", "eventing.knative.dev/EventPolicy"}},
	{what: "the functions", within: 3 * time.Minute, kinds: []string{"serving.knative.dev/Service"}},
	{what: "the triggers and the sources", within: 2 * time.Minute, after: (*installer).freshTokens,
		kinds: []string{"eventing.knative.dev/Trigger", "sources.knative.dev/ApiServerSource", "sources.knative.dev/PingSource"}},
}

// Install puts the release on the cluster, or brings it up to date there.
func Install(ctx context.Context, cfg Config) (*Installation, error) {
	objs, err := knative.Objects(string(cfg.Manifest))
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	c, err := knative.Connect(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	i := &installer{cfg: cfg, cluster: c, log: cfg.Log}
	if i.log == nil {
		i.log = io.Discard
	}
	byStage, err := staged(objs)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	for n, s := range stages {
		fmt.Fprintf(i.log, "install: %s\n", s.what)
		if err := i.put(ctx, s.within, byStage[n]...); err != nil {
			return nil, fmt.Errorf("install: %s: %w", s.what, err)
		}
		if s.after != nil {
			if err := s.after(i, ctx); err != nil {
				return nil, fmt.Errorf("install: %s: %w", s.what, err)
			}
		}
	}
	return i.result(ctx, byStage)
}

// staged sorts the manifest's objects into the stages, each keeping the manifest's
// order; an object of a kind no stage names is refused.
func staged(objs []*unstructured.Unstructured) ([][]*unstructured.Unstructured, error) {
	out := make([][]*unstructured.Unstructured, len(stages))
	for _, o := range objs {
		k := o.GroupVersionKind().Group + "/" + o.GetKind()
		found := false
		for n, s := range stages {
			for _, kind := range s.kinds {
				if kind == k {
					out[n], found = append(out[n], o), true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%s %s: no install stage takes a %s", o.GetKind(), o.GetName(), k)
		}
	}
	return out, nil
}

type installer struct {
	cfg           Config
	cluster       *knative.Cluster
	log           io.Writer
	operatorToken string
}

// put applies objs and waits until those of a kind with a Ready condition (or
// Available, for Deployments) have it.
func (i *installer) put(ctx context.Context, within time.Duration, objs ...*unstructured.Unstructured) error {
	if len(objs) == 0 {
		return nil
	}
	if err := i.prepare(ctx, objs); err != nil {
		return err
	}
	if err := i.cluster.Apply(ctx, objs...); err != nil {
		return err
	}
	var wait []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment", "Broker", "Trigger", "PingSource", "ApiServerSource", "SinkBinding":
			wait = append(wait, o)
		case "Service":
			if o.GroupVersionKind().Group == "serving.knative.dev" {
				wait = append(wait, o)
			}
		}
	}
	return i.cluster.Ready(ctx, within, wait...)
}

// asyncChannel makes an in-memory channel under the broker answer a sender once it
// has the event, not after every Trigger's delivery of it. By default it answers
// after: each sender (a function's reply, the broker's ingress) then waits for the
// whole chain of deliveries that follows, retries included, and a sender that gives
// up cancels them, dead letters too. A broker on another channel (Kafka) is left as
// it is.
func (i *installer) asyncChannel(ctx context.Context) error {
	const channel, async = "evalflow-kne-trigger", "messaging.knative.dev/async-handler" // the MT channel broker's: BROKER-kne-trigger
	got, err := i.cluster.Get(ctx, "messaging.knative.dev/v1", "InMemoryChannel", Namespace, channel)
	if err != nil || got.GetAnnotations()[async] == "true" {
		return nil
	}
	imc := &unstructured.Unstructured{}
	imc.SetAPIVersion("messaging.knative.dev/v1")
	imc.SetKind("InMemoryChannel")
	imc.SetNamespace(Namespace)
	imc.SetName(channel)
	imc.SetAnnotations(map[string]string{async: "true"})
	if err := i.cluster.Apply(ctx, imc); err != nil {
		return err
	}
	// The dispatcher reads the annotation when it first sees a channel only: it starts
	// again to read it.
	fmt.Fprintln(i.log, "install: restarting the in-memory channel's dispatcher for its async handler")
	return i.restartPods(ctx, "knative-eventing", "messaging.knative.dev/channel=in-memory-channel,messaging.knative.dev/role=dispatcher")
}

// freshTokens restarts the broker's filter when a Trigger's OIDC account is younger
// than a filter pod. The filter caches each Trigger account's token for 55 minutes,
// keyed by the account's name (knative.dev/eventing pkg/auth OIDCTokenProvider): a
// Trigger deleted and made again (an uninstall, then an install) gets a new account of
// the same name, and until the cache let go the filter would deliver with the old
// account's token, which the steps' TokenReview refuses (401) since that account is
// gone. Found by the Knative test's install after an uninstall.
func (i *installer) freshTokens(ctx context.Context) error {
	const filter = "eventing.knative.dev/brokerRole=filter"
	pods, err := i.cluster.Kube.CoreV1().Pods("knative-eventing").List(ctx, metav1.ListOptions{LabelSelector: filter})
	if err != nil || len(pods.Items) == 0 {
		return nil // not the MT channel broker's filter: its own way
	}
	oldest := time.Now()
	for _, p := range pods.Items {
		if p.Status.StartTime != nil && p.Status.StartTime.Time.Before(oldest) {
			oldest = p.Status.StartTime.Time
		}
	}
	triggers, err := i.cluster.Dynamic.Resource(triggerResource).Namespace(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("triggers: %w", err)
	}
	for _, t := range triggers.Items {
		account, _, _ := unstructured.NestedString(t.Object, "status", "auth", "serviceAccountName")
		if account == "" {
			continue
		}
		sa, err := i.cluster.Kube.CoreV1().ServiceAccounts(Namespace).Get(ctx, account, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("trigger %s's account: %w", t.GetName(), err)
		}
		if sa.CreationTimestamp.Time.After(oldest) {
			fmt.Fprintf(i.log, "install: restarting the broker's filter: Trigger %s's account is newer than its tokens may be\n", t.GetName())
			return i.restartPods(ctx, "knative-eventing", filter)
		}
	}
	return nil
}

var triggerResource = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"}

// restartPods deletes the pods selector selects, and waits until their Deployment's
// new ones are Ready.
func (i *installer) restartPods(ctx context.Context, namespace, selector string) error {
	pods := i.cluster.Kube.CoreV1().Pods(namespace)
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector}); err != nil {
		return fmt.Errorf("restart %s: %w", selector, err)
	}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(l.Items) == 0 {
			continue
		}
		ready := true
		for _, p := range l.Items {
			ready = ready && p.DeletionTimestamp == nil && podReady(p)
		}
		if ready {
			return nil
		}
	}
	return fmt.Errorf("restart %s: not ready within 2 minutes", selector)
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// result reads start's URL, as this machine reaches it, and each function's
// revision and image.
func (i *installer) result(ctx context.Context, byStage [][]*unstructured.Unstructured) (*Installation, error) {
	in := &Installation{Revisions: map[string]string{}, Images: map[string]string{}, OperatorToken: i.operatorToken}
	for _, objs := range byStage {
		for _, o := range objs {
			if o.GetKind() != "Service" || o.GroupVersionKind().Group != "serving.knative.dev" {
				continue
			}
			svc, err := i.cluster.Get(ctx, "serving.knative.dev/v1", "Service", o.GetNamespace(), o.GetName())
			if err != nil {
				return nil, fmt.Errorf("install: %w", err)
			}
			in.Revisions[o.GetName()], _, _ = unstructured.NestedString(svc.Object, "status", "latestReadyRevisionName")
			if in.Images[o.GetName()], err = ServiceImage(svc); err != nil {
				return nil, fmt.Errorf("install: %w", err)
			}
			if o.GetName() != "evalflow-start" {
				continue
			}
			raw, _, _ := unstructured.NestedString(svc.Object, "status", "url")
			u, err := url.Parse(raw)
			if err != nil || raw == "" {
				return nil, fmt.Errorf("install: start has no URL (%q)", raw)
			}
			if i.cfg.IngressPort != "" {
				u.Host = net.JoinHostPort(u.Hostname(), i.cfg.IngressPort)
			}
			in.StartURL = u.String()
		}
	}
	if in.StartURL == "" {
		return nil, fmt.Errorf("install: the manifest has no evalflow-start")
	}
	return in, nil
}

// Image is the image the function's Knative Service (evalflow-start, ...) runs on c.
func Image(ctx context.Context, c *knative.Cluster, service string) (string, error) {
	svc, err := c.Get(ctx, "serving.knative.dev/v1", "Service", Namespace, service)
	if err != nil {
		return "", err
	}
	return ServiceImage(svc)
}

// ServiceImage is the image a Knative Service runs.
func ServiceImage(svc *unstructured.Unstructured) (string, error) {
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	if len(containers) > 0 {
		if c, ok := containers[0].(map[string]any); ok {
			if image, ok := c["image"].(string); ok && image != "" {
				return image, nil
			}
		}
	}
	return "", fmt.Errorf("Service %s names no image", svc.GetName())
}
