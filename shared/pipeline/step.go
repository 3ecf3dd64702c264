package pipeline

import (
	"context"
	"errors"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/runstore"
)

// A step takes its events one of three ways, each in a span of the run's trace with
// its timing, and its error logged (handling):
//   - Turn, for the event that gives the step its turn of a run: the run it names,
//     only when the event is signed for that run, moved into the step's status with
//     the caller told, then the step's work on it;
//   - Signed, for an event about a run that moves it no further (deploy's stop): the
//     run named, only when signed for it;
//   - Serve, for an event of no one run (a tick, a Job's reference, a dead letter).
// A step never reads a run id out of an event itself, so none can skip the check.

// Turn is a run handed to a step for its turn, already begun (Begin).
type Turn struct {
	Run *evalflow.Run
	// Secrets are the run's secrets, opened, when the step asked for them (WithSecrets).
	Secrets map[string]string
	// Event is the event that gave the step its turn.
	Event event.Event
}

// TurnOption adds to how a step takes its turn.
type TurnOption func(*turnOptions)

type turnOptions struct {
	secrets    bool
	oneAtATime bool
	update     []runstore.UpdateOption
}

// WithSecrets reads the run's secrets with the write that begins the turn.
func WithSecrets() TurnOption { return func(o *turnOptions) { o.secrets = true } }

// OneAtATime has the turns of one run taken one at a time in this process: a job
// sends several reports at once, and each then writes the run as the one before left
// it, with no conflict.
func OneAtATime() TurnOption { return func(o *turnOptions) { o.oneAtATime = true } }

// Updating adds opts to the write that begins the turn (runstore.Admitting).
func Updating(opts ...runstore.UpdateOption) TurnOption {
	return func(o *turnOptions) { o.update = append(o.update, opts...) }
}

// Turn takes ev as the step's turn of the run it names: read, checked as signed for
// that run (ref), and moved into status with the caller told (begin); then work is
// done on it and its reply is the step's. An event that names no run, is not signed
// for it, or is of a run that has ended or is past this step is dropped (nil, nil).
func (e *Env) Turn(ctx context.Context, ev event.Event, status evalflow.Status, work func(context.Context, *Turn) (*event.Event, error), opts ...TurnOption) (*event.Event, error) {
	var o turnOptions
	for _, opt := range opts {
		opt(&o)
	}
	return e.signed(ctx, ev, func(ctx context.Context, ref subject) (*event.Event, error) {
		if o.oneAtATime {
			e.turns.Lock(ref.ID)
			defer e.turns.Unlock(ref.ID)
		}
		run, secrets, ok, err := e.begin(ctx, ref, status, o.secrets, o.update)
		if err != nil || !ok {
			return nil, err
		}
		return work(ctx, &Turn{Run: run, Secrets: secrets, Event: ev})
	})
}

// Signed handles ev, about a run, with handle given the run's id: only when the event
// is signed for that run as its type requires (a step's by Sign, a job's report with
// its run's report key). Anything else is logged and dropped.
func (e *Env) Signed(ctx context.Context, ev event.Event, handle func(ctx context.Context, id string) (*event.Event, error)) (*event.Event, error) {
	return e.signed(ctx, ev, func(ctx context.Context, ref subject) (*event.Event, error) { return handle(ctx, ref.ID) })
}

func (e *Env) signed(ctx context.Context, ev event.Event, handle func(context.Context, subject) (*event.Event, error)) (*event.Event, error) {
	return e.Serve(ctx, ev, func(ctx context.Context, ev event.Event) (*event.Event, error) {
		ref := e.subjectOf(ev)
		if ref.ID == "" {
			return nil, nil
		}
		return handle(ctx, ref)
	})
}

// Serve handles ev, an event of no one run, with handle: in a span of its own, timed,
// its error logged.
func (e *Env) Serve(ctx context.Context, ev event.Event, handle func(context.Context, event.Event) (*event.Event, error)) (reply *event.Event, err error) {
	ctx, done := e.handling(ctx, ev)
	defer done(&reply, &err)
	return handle(ctx, ev)
}

// SignedFor reports whether ev is signed for run id as its type requires.
func (e *Env) SignedFor(ev event.Event, id string) bool { return e.subjectOf(ev).ID == id && id != "" }

// Deliver serves one delivery of an event over HTTP (cloudevent.Serve) to handle, when
// the request is the broker's delivery (Delivered); any other is answered 401 (503
// when that cannot be told now, and the broker retries) and handles nothing.
func (e *Env) Deliver(w http.ResponseWriter, r *http.Request, handle cloudevent.HandlerFunc) {
	if err := e.Delivered(r); err != nil {
		e.Log.Warn("a request that is not the broker's delivery refused", "remote", r.RemoteAddr, "type", r.Header.Get("Ce-Type"), "err", err)
		if errors.Is(err, auth.ErrNotADelivery) {
			http.Error(w, "only the broker delivers here", http.StatusUnauthorized)
		} else {
			http.Error(w, "cannot tell the broker's deliveries now", http.StatusServiceUnavailable)
		}
		return
	}
	cloudevent.Serve(w, r, handle)
}

// ChecksDeliveries is whether the deployment says how to tell the broker's deliveries
// (Config's DeliveryToken or DeliveryAudience).
func (e *Env) ChecksDeliveries() bool { return e.deliveries != nil }

// Delivered is nil when r is the broker's delivery: where the deployment's broker
// delivers with a token (local mode's shared one, Knative's OIDC tokens), r carries
// one that passes; else every request is.
func (e *Env) Delivered(r *http.Request) error {
	if e.deliveries == nil {
		return nil
	}
	return e.deliveries.Check(r.Context(), auth.Bearer(r.Header.Get("Authorization")))
}
