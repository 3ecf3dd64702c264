package broker

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/robfig/cron/v3"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"sigs.k8s.io/yaml"
)

// PingSource plays a Knative PingSource locally: on its schedule it sends its event to
// the broker, as the cluster's PingSource adapter would.
type PingSource struct {
	Source   *sourcesv1.PingSource
	schedule cron.Schedule
}

// LoadPingSources reads every PingSource manifest in fsys (*.yaml at its root; other
// kinds are skipped) strictly, defaulted and validated as the Knative webhook would.
func LoadPingSources(ctx context.Context, fsys fs.FS) ([]*PingSource, error) {
	var out []*PingSource
	err := eachDocument(fsys, func(file string, i int, doc []byte) error {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind != "PingSource" {
			return nil
		}
		ps, err := ParsePingSource(ctx, doc)
		if err != nil {
			return fmt.Errorf("broker: %s (document %d): %w", file, i+1, err)
		}
		out = append(out, ps)
		return nil
	})
	return out, err
}

// eachDocument calls each with every YAML document of fsys's *.yaml files (at its
// root), in the files' order.
func eachDocument(fsys fs.FS, each func(file string, i int, doc []byte) error) error {
	files, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	sort.Strings(files)
	for _, file := range files {
		b, err := fs.ReadFile(fsys, file)
		if err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		for i, doc := range splitYAML(b) {
			if err := each(file, i, doc); err != nil {
				return err
			}
		}
	}
	return nil
}

// ParsePingSource decodes one PingSource manifest strictly and validates it.
func ParsePingSource(ctx context.Context, doc []byte) (*PingSource, error) {
	var s sourcesv1.PingSource
	if err := yaml.UnmarshalStrict(doc, &s); err != nil {
		return nil, err
	}
	s.SetDefaults(ctx)
	if err := s.Validate(ctx); err != nil {
		return nil, err
	}
	sched, err := cron.ParseStandard(s.Spec.Schedule)
	if err != nil {
		return nil, fmt.Errorf("pingsource %s: schedule: %w", s.Name, err)
	}
	return &PingSource{Source: &s, schedule: sched}, nil
}

// Event is the tick at t, as the PingSource adapter makes it.
func (p *PingSource) Event(t time.Time) event.Event {
	e := event.New()
	e.SetType(sourcesv1.PingSourceEventType)
	e.SetSource(sourcesv1.PingSourceSource(p.Source.Namespace, p.Source.Name))
	e.SetID(fmt.Sprintf("%s-%d", p.Source.Name, t.Unix()))
	e.SetTime(t)
	_ = e.SetData(p.Source.Spec.ContentType, []byte(p.Source.Spec.Data))
	return e
}

// Run sends a tick on the schedule until ctx ends; a tick that cannot be sent is
// logged, and the next one comes.
func (p *PingSource) Run(ctx context.Context, send func(context.Context, event.Event) error, log *slog.Logger) {
	for {
		next := p.schedule.Next(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		if err := send(ctx, p.Event(next)); err != nil && ctx.Err() == nil {
			log.Warn("ping not delivered", "pingsource", p.Source.Name, "error", err)
		}
	}
}
