// Package broker is evalflow's local broker: it reads the same Knative Trigger
// manifests as the cluster (triggers/*.yaml), filters events with Knative Eventing's
// own filter code, delivers them in CloudEvents binary mode with each trigger's
// delivery spec (retries, backoff, timeout, dead letter sink), and ingests the
// subscribers' replies as new events.
package broker

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"strings"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	"knative.dev/eventing/pkg/eventfilter"
	"knative.dev/eventing/pkg/eventfilter/attributes"
	"knative.dev/eventing/pkg/eventfilter/subscriptionsapi"
	"knative.dev/eventing/pkg/kncloudevents"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"sigs.k8s.io/yaml"
)

// Resolver maps a subscriber reference (a Knative Service, say) to a URL.
type Resolver func(ref *duckv1.KReference) (*url.URL, error)

// Trigger is a parsed, validated Trigger ready to route.
type Trigger struct {
	Name       string
	Filter     eventfilter.Filter
	Subscriber *url.URL
	DeadLetter *url.URL
	Retry      kncloudevents.RetryConfig
}

// FeatureContext returns ctx carrying the Knative Eventing feature flags of a
// config-features ConfigMap manifest (file in fsys: eventing's config-features.yaml),
// so triggers are validated as the cluster's webhook validates them.
func FeatureContext(ctx context.Context, fsys fs.FS, file string) (context.Context, error) {
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, fmt.Errorf("broker: feature flags: %w", err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(b, &cm); err != nil {
		return nil, fmt.Errorf("broker: feature flags %s: %w", file, err)
	}
	flags, err := feature.NewFlagsConfigFromConfigMap(&cm)
	if err != nil {
		return nil, fmt.Errorf("broker: feature flags %s: %w", file, err)
	}
	return feature.ToContext(ctx, flags), nil
}

// LoadTriggers reads every Trigger manifest in fsys (*.yaml at its root; several
// documents per file allowed) that names broker, strictly: an unknown field or an
// invalid Trigger is an error naming the file.
func LoadTriggers(ctx context.Context, fsys fs.FS, broker string, resolve Resolver) ([]Trigger, error) {
	var out []Trigger
	err := eachDocument(fsys, func(file string, i int, doc []byte) error {
		t, err := ParseTrigger(ctx, doc)
		if err != nil {
			return fmt.Errorf("broker: %s (document %d): %w", file, i+1, err)
		}
		if t.Spec.Broker != broker {
			return nil
		}
		rt, err := route(t, resolve)
		if err != nil {
			return fmt.Errorf("broker: %s: trigger %s: %w", file, t.Name, err)
		}
		out = append(out, rt)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("broker: no trigger for broker %q", broker)
	}
	return out, nil
}

// ParseTrigger decodes one Trigger manifest strictly, defaults and validates it as
// the Knative webhook would.
func ParseTrigger(ctx context.Context, doc []byte) (*eventingv1.Trigger, error) {
	var t eventingv1.Trigger
	if err := yaml.UnmarshalStrict(doc, &t); err != nil {
		return nil, err
	}
	if t.Kind != "Trigger" || t.APIVersion != "eventing.knative.dev/v1" {
		return nil, fmt.Errorf("not an eventing.knative.dev/v1 Trigger (%s %s)", t.APIVersion, t.Kind)
	}
	t.SetDefaults(ctx)
	if err := t.Validate(ctx); err != nil {
		return nil, err
	}
	return &t, nil
}

func route(t *eventingv1.Trigger, resolve Resolver) (Trigger, error) {
	rt := Trigger{Name: t.Name}
	var err error
	if rt.Subscriber, err = destination(t.Spec.Subscriber, resolve); err != nil {
		return rt, fmt.Errorf("subscriber: %w", err)
	}
	if len(t.Spec.Filters) > 0 {
		rt.Filter = subscriptionsapi.CreateSubscriptionsAPIFilters(zap.NewNop(), t.Spec.Filters)
	} else {
		var attrs map[string]string
		if t.Spec.Filter != nil {
			attrs = t.Spec.Filter.Attributes
		}
		rt.Filter = attributes.NewAttributesFilter(attrs)
	}
	delivery := eventingduckv1.DeliverySpec{}
	if t.Spec.Delivery != nil {
		delivery = *t.Spec.Delivery
		if d := t.Spec.Delivery.DeadLetterSink; d != nil {
			if rt.DeadLetter, err = destination(*d, resolve); err != nil {
				return rt, fmt.Errorf("deadLetterSink: %w", err)
			}
		}
	}
	if rt.Retry, err = kncloudevents.RetryConfigFromDeliverySpec(delivery); err != nil {
		return rt, err
	}
	return rt, nil
}

func destination(d duckv1.Destination, resolve Resolver) (*url.URL, error) {
	var base *url.URL
	if d.Ref != nil {
		u, err := resolve(d.Ref)
		if err != nil {
			return nil, err
		}
		base = u
	}
	if d.URI != nil {
		u := d.URI.URL()
		if base == nil {
			return u, nil
		}
		return base.ResolveReference(u), nil
	}
	if base == nil {
		return nil, fmt.Errorf("neither ref nor uri")
	}
	return base, nil
}

func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		if len(strings.TrimSpace(stripComments(string(d)))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
