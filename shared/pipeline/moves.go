package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/cloudevents/sdk-go/v2/event"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/runstore"
)

// The moves every step makes on a run: begin its turn, notify, change, fail, reply.

// subject is the run an event is about: its id, and the run as the event's sender last
// stored it, when the event carries it (evalflow.RunRef).
type subject struct {
	ID     string
	stored []byte
}

// subjectOf reads the run an event is about from its payload. A bad payload, or an event
// not signed for that run as its type requires (a step's by Sign, a job's report with
// its run's report key), is logged and reported as an empty subject: dropped, not
// redelivered forever.
func (e *Env) subjectOf(ev event.Event) subject {
	var ref evalflow.RunRef
	if err := cloudevent.Decode(ev, &ref); err != nil || ref.RunID == "" {
		e.Log.Error("event without a run id dropped", "type", ev.Type(), "id", ev.ID(), "error", err)
		return subject{}
	}
	if !e.signedFor(ev, ref.RunID) {
		e.Metrics.Unsigned.Inc()
		e.Log.Warn("event not signed for its run dropped", "run_id", ref.RunID, "type", ev.Type(), "id", ev.ID(), "source", ev.Source())
		return subject{}
	}
	return subject{ID: ref.RunID, stored: ref.Stored}
}

// begin moves run ref into status (the status the step works in) and notifies the
// caller that the step started; opts add to the write that moves it (and to the read,
// where there is one: runstore.Admitting), and withSecrets reads the run's secrets in
// the same round trip. ok is false when there is nothing to do: the run does not
// exist, has ended, or is already past this step (a duplicate or late event). A run
// already in status is returned with ok: the step redoes its idempotent work.
//
// The move is written over the copy of the run the event carries, when it does and
// the run is still so: one round trip. The notification goes out once the run has
// moved; one that cannot be sent fails begin, and the redelivery, finding the run in
// status, sends it again. Its id derives from the run and step, so one sent twice is
// one to the caller.
func (e *Env) begin(ctx context.Context, ref subject, status evalflow.Status, withSecrets bool, opts []runstore.UpdateOption) (*evalflow.Run, map[string]string, bool, error) {
	r, secrets, err := e.base(ctx, ref, status, withSecrets, opts)
	if errors.Is(err, evalflow.ErrNotFound) {
		e.Log.Warn("event for an unknown run dropped", "run_id", ref.ID)
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, err
	}
	if r.Status == status {
		return e.redo(ctx, r, secrets)
	}
	now := e.Now()
	var started event.Event
	if withSecrets {
		opts = append(opts, runstore.WithSecrets(&secrets))
	}
	moved, err := e.Store.UpdateRun(ctx, r, func(r *evalflow.Run) error { return r.Advance(status, now) },
		append(opts, runstore.Recording(func(r *evalflow.Run) evalflow.TimelineEntry {
			var entry evalflow.TimelineEntry
			started, entry = e.Note(r, evalflow.NoteStarted, "")
			return entry
		}))...)
	switch {
	case errors.Is(err, evalflow.ErrNotFound):
		return nil, nil, false, nil
	case errors.Is(err, evalflow.ErrStale) && moved.Status == status: // a copy of the event moved it meanwhile
		if withSecrets {
			if moved, secrets, err = e.Store.GetWithSecrets(ctx, ref.ID, opts...); err != nil {
				return nil, nil, false, err
			}
		}
		return e.redo(ctx, moved, secrets)
	case errors.Is(err, evalflow.ErrOutOfTurn):
		e.Metrics.Dropped.WithLabelValues(string(status)).Inc()
		e.Log.Warn("event out of turn dropped: it would skip a step", "run_id", ref.ID, "run_status", moved.Status, "to", status)
		return moved, nil, false, nil
	case errors.Is(err, evalflow.ErrStale):
		e.Metrics.Dropped.WithLabelValues(string(status)).Inc()
		e.Log.Info("duplicate or late event dropped", "run_id", ref.ID, "run_status", moved.Status)
		return moved, nil, false, nil
	case err != nil:
		return nil, nil, false, err
	}
	if err := e.announce(ctx, started); err != nil {
		return nil, nil, false, err
	}
	return moved, secrets, true, nil
}

// base is the run ref as the step moves it from: the copy the event carries, if it
// is of a run the step may move; the step's own recent copy of a run it moved already
// (its later events: job-watch's reports); else the run as stored, read (with its
// secrets, and opts). Only a run read is taken as it is: a copy serves as what an
// update writes over if the run is still so.
func (e *Env) base(ctx context.Context, ref subject, status evalflow.Status, withSecrets bool, opts []runstore.UpdateOption) (*evalflow.Run, map[string]string, error) {
	if ref.stored != nil {
		if r, err := runstore.Decode(ref.ID, ref.stored); err == nil && r.Status != status {
			if next := *r; next.Advance(status, e.Now()) == nil {
				return r, nil, nil
			}
		}
	}
	if cached, hit := e.Store.Recent(ref.ID); hit && !withSecrets && cached.Status == status {
		return cached, nil, nil
	}
	if withSecrets {
		return e.Store.GetWithSecrets(ctx, ref.ID, opts...)
	}
	r, err := e.Store.Get(ctx, ref.ID)
	return r, nil, err
}

// redo hands back run r, which is in the step's status already (an event redelivered
// while the step was at work, or the step's later event of the run), for the step to
// redo its idempotent work; a started notification this process has not sent (the
// send failed, or another process moved the run) is sent again.
func (e *Env) redo(ctx context.Context, r *evalflow.Run, secrets map[string]string) (*evalflow.Run, map[string]string, bool, error) {
	e.Metrics.Redeliveries.WithLabelValues(string(r.Status)).Inc()
	started, _ := e.Note(r, evalflow.NoteStarted, "")
	if !e.announced.Contains(started.ID()) {
		if err := e.announce(ctx, started); err != nil {
			return nil, nil, false, err
		}
	}
	return r, secrets, true, nil
}

// announce sends a step's started notification, and remembers it sent.
func (e *Env) announce(ctx context.Context, started event.Event) error {
	if err := e.Events.Send(ctx, started); err != nil {
		return fmt.Errorf("%s: notify run %s: %w", e.Step, started.Subject(), err)
	}
	e.announced.Add(started.ID(), struct{}{})
	return nil
}

// Note is the step's notification of status on run r: the event to send, and the
// timeline entry it is kept as.
func (e *Env) Note(r *evalflow.Run, status, message string) (event.Event, evalflow.TimelineEntry) {
	n := evalflow.Notify(r, e.Step, status, message)
	ev := cloudevent.Notification(r, n)
	e.Sign(&ev, r.ID) // so that a dead letter of it is known for the run's (job-watch)
	return ev, evalflow.TimelineEntry{ID: ev.ID(), Time: ev.Time(), Notification: n}
}

// Notify tells run r's caller that the step reached status, and keeps it in the run's
// history (its timeline: once per notification, however often the step is redone).
func (e *Env) Notify(ctx context.Context, r *evalflow.Run, status, message string) error {
	ev, entry := e.Note(r, status, message)
	if err := e.Store.Record(ctx, r.ID, entry); err != nil {
		return fmt.Errorf("%s: notify run %s: %w", e.Step, r.ID, err)
	}
	if err := e.Events.Send(ctx, ev); err != nil {
		return fmt.Errorf("%s: notify run %s: %w", e.Step, r.ID, err)
	}
	return nil
}

// Change applies change to run r as it was read (runstore.Store.UpdateRun) and keeps
// the step's notification of status in the run's history in the same write, then
// tells the caller. It returns what UpdateRun returns (evalflow.ErrStale: nothing
// written, nothing sent). A change that ends a run holding a job slot hands the slot
// to the first run in line, and lets that run in (run.verified, to deploy).
func (e *Env) Change(ctx context.Context, r *evalflow.Run, change func(*evalflow.Run) error, status, message string) (*evalflow.Run, error) {
	var ev event.Event
	var handed string
	next, err := e.Store.UpdateRun(ctx, r, change, runstore.HandingOver(&handed), runstore.Recording(func(r *evalflow.Run) evalflow.TimelineEntry {
		var entry evalflow.TimelineEntry
		ev, entry = e.Note(r, status, message)
		return entry
	}))
	if err != nil {
		return next, err
	}
	if err := e.Events.Send(ctx, ev); err != nil {
		return nil, fmt.Errorf("%s: notify run %s: %w", e.Step, r.ID, err)
	}
	if handed != "" {
		// Lost, it is sent again by the stalled-run driver: the run holds its slot.
		if err := e.Events.Send(ctx, *e.Next(evalflow.TypeVerified, handed)); err != nil {
			e.Log.Warn("a run handed a job slot was not let in", "run_id", handed, "after", r.ID, "error", err)
		}
	}
	return next, nil
}

// Fail ends run id as failed with message, notifies the caller and returns the
// run.failed event to reply with. A run that has already ended is left as it is, and
// no event is returned. The message may quote what the endpoint or a job said: the
// run's secrets are redacted from it before it is logged, stored or sent.
func (e *Env) Fail(ctx context.Context, id, message string) (*event.Event, error) {
	r, secrets, err := e.Store.GetWithSecrets(ctx, id)
	if errors.Is(err, evalflow.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: fail run %s: %w", e.Step, id, err)
	}
	message = evalflow.Redact(message, slices.Collect(maps.Values(secrets))...)
	e.Log.Error("run failed", "run_id", id, "reason", message)
	r, err = e.Change(ctx, r, func(r *evalflow.Run) error { return r.Fail(message, e.Now()) }, evalflow.NoteFailed, message)
	if errors.Is(err, evalflow.ErrStale) || errors.Is(err, evalflow.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e.Next(evalflow.TypeFailed, r.ID), nil
}

// Settle ends a step that failed at what with err: a run that can never succeed (err
// is evalflow.ErrPermanent) is failed, saying what failed and why, and the step replies
// run.failed; any other error is returned, wrapped with what and the run, for the
// broker to redeliver the event. It is the one place a step decides "fail or retry".
func (e *Env) Settle(ctx context.Context, id, what string, err error) (*event.Event, error) {
	if errors.Is(err, evalflow.ErrPermanent) {
		return e.Fail(ctx, id, fmt.Sprintf("%s: %s: %v", e.Step, what, err))
	}
	return nil, fmt.Errorf("%s: %s (run %s): %w", e.Step, what, id, err)
}

// Next returns the event a step replies with to move run id on. It carries the run
// as the step last stored it, for the next step to write its move over (Turn).
func (e *Env) Next(typ evalflow.EventType, id string) *event.Event {
	stored, _ := e.Store.Stored(id)
	ev := cloudevent.New(e.Step, typ, id, evalflow.RunRef{RunID: id, Stored: stored})
	e.Sign(&ev, id)
	return &ev
}

// Within tries op, again with exponential backoff while it fails, until it succeeds,
// fails permanently (evalflow.ErrPermanent), or d has passed. What still fails after
// d is permanent too: a step that waited d for what its run needs (a cluster, an
// endpoint) fails the run with the reason rather than hold it.
func Within(ctx context.Context, d time.Duration, op func(context.Context) error) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := op(ctx)
		if errors.Is(err, evalflow.ErrPermanent) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(d))
	if err != nil && !errors.Is(err, evalflow.ErrPermanent) {
		return evalflow.Permanent(err)
	}
	return err
}
