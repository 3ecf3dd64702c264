package function

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// The extensions Knative sets on an event it dead-letters.
const (
	extErrorDest = "knativeerrordest"
	extErrorCode = "knativeerrorcode"
	extErrorData = "knativeerrordata"
)

// isDeadLetter reports whether e is one Knative dead-lettered.
func isDeadLetter(e event.Event) bool {
	_, lost := e.Extensions()[extErrorDest]
	return lost
}

// deadLetter receives what the broker could not deliver after a trigger's retries
// (every trigger's deadLetterSink is job-watch, reached inside the cluster only), keeps
// it, and fails the run it was about, so that no run waits forever on a lost event. A
// lost notification, request (start never recorded its run) or progress report fails
// nothing, nor does an event not evalflow's (a tick, a Job's reference: the next tick
// looks again). A run's event not signed for it is forged: neither kept nor counted.
func (f *Function) deadLetter(ctx context.Context, e event.Event) (*event.Event, error) {
	id := e.Subject()
	runEvent := id != "" && strings.HasPrefix(e.Type(), "dev.evalflow.") &&
		cloudevent.TypeOf(e) != evalflow.TypeNotification && cloudevent.TypeOf(e) != evalflow.TypeRequested
	if runEvent && !f.SignedFor(e, id) {
		return nil, nil
	}
	dest, _ := e.Extensions()[extErrorDest].(string)
	code, _ := e.Extensions()[extErrorCode].(string)
	f.Log.Error("undeliverable event", "run_id", id, "type", e.Type(), "destination", dest, "code", code)
	f.Metrics.DeadLetters.WithLabelValues(e.Type()).Inc()
	if err := f.Store.KeepDeadLetter(ctx, evalflow.DeadLetter{ID: e.ID(), Type: cloudevent.TypeOf(e), Source: e.Source(), RunID: id,
		Destination: dest, Code: code, Reason: errorData(e), Time: f.Now().UTC()}); err != nil {
		return nil, err
	}
	if !runEvent || cloudevent.TypeOf(e) == evalflow.TypeJobProgress {
		return nil, nil
	}
	return f.Fail(ctx, id, fmt.Sprintf("%s could not be delivered to %s after retries (last answer %s)", e.Type(), dest, code))
}

// errorData is what Knative says of a dead letter's last failure (knativeerrordata:
// the answer's body, base64), cut short; "" for none.
func errorData(e event.Event) string {
	v, _ := e.Extensions()[extErrorData].(string)
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return ""
	}
	return evalflow.Clip(strings.ToValidUTF8(string(b), "?"), 500)
}
