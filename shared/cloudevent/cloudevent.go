// Package cloudevent turns evalflow's event contract into CloudEvents (sdk-go) and sends
// them to a sink (the broker's ingress, K_SINK) with retries.
package cloudevent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cecontext "github.com/cloudevents/sdk-go/v2/context"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/tracing"
)

// New builds an event of type typ from step about run, carrying data as JSON. Its id is
// derived from the type, the run and idParts, so that redoing a step re-emits the same
// event (evalflow.EventID).
func New(step evalflow.StepID, typ evalflow.EventType, runID string, data any, idParts ...string) event.Event {
	e := cloudevents.NewEvent()
	e.SetID(evalflow.EventID(append([]string{string(typ), runID}, idParts...)...))
	e.SetSource(evalflow.SourceFor(step))
	e.SetType(string(typ))
	e.SetSubject(runID)
	e.SetTime(time.Now().UTC())
	_ = e.SetData(cloudevents.ApplicationJSON, data) // data is always one of our JSON payloads
	return e
}

// Notification builds the caller's notification event for run r, addressed with the
// caller's source and topic as extension attributes.
func Notification(r *evalflow.Run, n evalflow.Notification) event.Event {
	parts := []string{string(n.Step), n.Status}
	if n.Status == evalflow.NoteProgress && n.Progress != nil {
		parts = append(parts, fmt.Sprint(n.Progress.Done), n.Progress.UpdatedAt.String())
	}
	e := New(n.Step, evalflow.TypeNotification, r.ID, n, parts...)
	if r.Source != "" {
		e.SetExtension(evalflow.ExtCallerSource, r.Source)
	}
	if r.SourceTopic != "" {
		e.SetExtension(evalflow.ExtCallerTopic, r.SourceTopic)
	}
	return e
}

// Decode reads e's JSON data into v. A payload that is not JSON, or lacks a run id, is
// a permanently bad event: the error is an evalflow CodeInvalid error.
func Decode(e event.Event, v any) error {
	if ct := e.DataContentType(); ct != "" && ct != cloudevents.ApplicationJSON && ct != "text/json" {
		return evalflow.Invalidf("datacontenttype", "must be application/json, got %q", ct)
	}
	if err := json.Unmarshal(e.Data(), v); err != nil {
		return &evalflow.Error{Code: evalflow.CodeInvalid, Field: "data", Message: "not the JSON payload of " + e.Type(), Err: err}
	}
	return nil
}

// The CloudEvents distributed-tracing extension's attributes.
const (
	extTraceParent = "traceparent"
	extTraceState  = "tracestate"
)

// SetTrace sets e's traceparent (and tracestate) to ctx's span, when ctx has one.
func SetTrace(ctx context.Context, e *event.Event) {
	parent, state := tracing.Inject(ctx)
	if parent == "" {
		return
	}
	e.SetExtension(extTraceParent, parent)
	if state != "" {
		e.SetExtension(extTraceState, state)
	}
}

// Trace is ctx carrying the span context of e's traceparent, if it has one.
func Trace(ctx context.Context, e event.Event) context.Context {
	parent, _ := e.Extensions()[extTraceParent].(string)
	state, _ := e.Extensions()[extTraceState].(string)
	if parent == "" {
		return ctx
	}
	return tracing.Extract(ctx, parent, state)
}

// Bearer is an HTTP client for a Sender to an ingress that asks for a bearer token
// (local mode's broker): it sends token with every request.
func Bearer(token string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: bearer{token: token, base: http.DefaultTransport}}
}

// BearerFile is an HTTP client for a Sender to an ingress that asks for a token kept
// in a file someone else renews (Knative's OIDC: the SinkBinding's /oidc/token, a
// pod's projected ServiceAccount token): each request sends the file as it is then. A
// file that is absent sends no token, for an ingress that asks for none.
func BearerFile(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: bearer{file: path, base: http.DefaultTransport}}
}

type bearer struct {
	token, file string
	base        http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	token := b.token
	if b.file != "" {
		t, err := os.ReadFile(b.file)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cloudevent: the token for %s: %w", r.URL.Host, err)
		}
		token = strings.TrimSpace(string(t))
	}
	r = r.Clone(r.Context())
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return b.base.RoundTrip(r)
}

// Sender posts events to one sink.
type Sender struct {
	client cloudevents.Client
	target string
	// Retries is how many times a refused or failed send is retried (exponential backoff).
	Retries int
}

// NewSender returns a Sender to target (the broker's ingress URL).
func NewSender(target string, hc *http.Client) (*Sender, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	p, err := cloudevents.NewHTTP(cehttp.WithTarget(target), cehttp.WithClient(*hc))
	if err != nil {
		return nil, fmt.Errorf("cloudevent: sender for %s: %w", target, err)
	}
	c, err := cloudevents.NewClient(p, cloudevents.WithTimeNow())
	if err != nil {
		return nil, fmt.Errorf("cloudevent: sender for %s: %w", target, err)
	}
	return &Sender{client: c, target: target, Retries: 5}, nil
}

// Send posts e, retrying with backoff until the sink acknowledges it.
func (s *Sender) Send(ctx context.Context, e event.Event) error {
	if _, traced := e.Extensions()[extTraceParent]; !traced {
		SetTrace(ctx, &e) // the event goes on in the trace of what sends it
	}
	ctx = cecontext.WithRetriesExponentialBackoff(ctx, 50*time.Millisecond, s.Retries)
	if res := s.client.Send(ctx, e); !cloudevents.IsACK(res) {
		return fmt.Errorf("cloudevent: send %s for run %s to %s: %w", e.Type(), e.Subject(), s.target, res)
	}
	return nil
}

// TypeOf is e's type, as evalflow names its types.
func TypeOf(e event.Event) evalflow.EventType { return evalflow.EventType(e.Type()) }
