package cloudevent

import (
	"context"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// HandlerFunc handles one event, with the context of the request that carried it,
// and may reply with one.
type HandlerFunc func(context.Context, event.Event) (*event.Event, error)

// MaxEventBytes bounds an event's HTTP body.
const MaxEventBytes = 4 << 20

// Read reads the one CloudEvent a request carries, in binary or structured mode, with
// its body bounded by MaxEventBytes; an error is a request that is not a valid event
// (answer 400).
func Read(w http.ResponseWriter, r *http.Request) (*event.Event, error) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxEventBytes)
	ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
	if err != nil {
		return nil, err
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return ev, nil
}

// Serve answers one HTTP request that carries one CloudEvent (binary or structured
// mode): the event is handled in the request's own goroutine, with its context, and
// the answer is the reply event (binary mode, 200), 200 with no body, 400 for a
// request that is not a valid event, or 500 when handling failed (the sender retries).
//
// It stands in for sdk-go's NewHTTPReceiveHandler, on which func-go serves CloudEvents
// functions: that hands each request's event to a goroutine through one channel
// shared by all requests, so under concurrent deliveries an event can be handled with
// another request's context (cancelled when that request ends), and once a sender
// gives up, every later event waits for the next request to arrive
// (cloudevents/sdk-go#1224). evalflow's steps are func-go HTTP functions that serve
// their events with Serve.
func Serve(w http.ResponseWriter, r *http.Request, handle HandlerFunc) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "a CloudEvent is POSTed", http.StatusMethodNotAllowed)
		return
	}
	ev, err := Read(w, r)
	if err != nil {
		http.Error(w, "not a valid CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	reply, err := handle(ctx, *ev)
	switch {
	case err != nil:
		// The handler logs why; the answer says only that the sender should retry.
		http.Error(w, "the event was not handled; send it again", http.StatusInternalServerError)
	case reply != nil:
		if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(reply), http.StatusOK, w); err != nil {
			http.Error(w, "the reply could not be written: "+err.Error(), http.StatusInternalServerError)
		}
	default:
		w.WriteHeader(http.StatusOK)
	}
}
