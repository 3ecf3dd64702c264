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
// (every trigger's deadLetterSink is job-watch: in local mode only the broker, with its
// delivery token, reaches it), keeps it, and fails the run it was about, so that no run
// waits forever on a lost event.
//
// A dead letter is about a run only when its event is one of evalflow's signed for
// that run (a step's event, a job's report, a notification to the caller): one
// claiming a run without that signature is forged, neither kept nor counted (but as
// unsigned). Any other (a caller's request, a tick, a Job's reference, a type not
// evalflow's) is kept for the operator, about no run. A lost progress report or
// notification fails nothing.
func (f *Function) deadLetter(ctx context.Context, e event.Event) (*event.Event, error) {
	typ, id := cloudevent.TypeOf(e), ""
	if typ.Signed() {
		if !f.SignedFor(e, e.Subject()) {
			return nil, nil
		}
		id = e.Subject()
	}
	dest, _ := e.Extensions()[extErrorDest].(string)
	code, _ := e.Extensions()[extErrorCode].(string)
	f.Log.Error("undeliverable event", "run_id", id, "type", typ, "destination", dest, "code", code)
	f.Metrics.DeadLetters.WithLabelValues(typ.Label()).Inc()
	if err := f.Store.KeepDeadLetter(ctx, evalflow.DeadLetter{ID: e.ID(), Type: typ, Source: e.Source(), RunID: id,
		Destination: dest, Code: code, Reason: errorData(e), Time: f.Now().UTC()}); err != nil {
		return nil, err
	}
	if id == "" || typ == evalflow.TypeJobProgress || typ == evalflow.TypeNotification {
		return nil, nil
	}
	return f.Fail(ctx, id, fmt.Sprintf("%s could not be delivered to %s after retries (last answer %s)", typ, dest, code))
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
