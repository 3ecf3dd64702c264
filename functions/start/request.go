package function

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/evalflow/evalflow/runner/task/usertask"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// isCloudEvent is a request that carries a CloudEvent, in binary or structured mode.
func isCloudEvent(r *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return r.Header.Get("Ce-Specversion") != "" || ct == "application/cloudevents+json"
}

// readRequest reads a start request sent as plain JSON or as a CloudEvent (binary or
// structured mode) of type dev.evalflow.run.requested, and the event's source.
func readRequest(w http.ResponseWriter, r *http.Request) (evalflow.Request, string, error) {
	if !isCloudEvent(r) {
		r.Body = http.MaxBytesReader(w, r.Body, evalflow.MaxRequestBytes+64<<10)
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
			return evalflow.Request{}, "", evalflow.Invalidf("Content-Type", "must be application/json or a CloudEvent, got %q", ct)
		}
		req, err := decode(r.Body)
		return req, "", err
	}
	ev, err := cloudevent.Read(w, r)
	if err != nil { // not an event, or one without id, source, type or specversion
		var bad event.ValidationError
		if errors.As(err, &bad) {
			return evalflow.Request{}, "", &evalflow.Error{Code: evalflow.CodeInvalid, Field: slices.Sorted(maps.Keys(bad))[0], Message: "not a valid CloudEvent attribute", Err: err}
		}
		return evalflow.Request{}, "", &evalflow.Error{Code: evalflow.CodeInvalid, Field: "cloudevent", Message: "not a valid CloudEvent", Err: err}
	}
	if cloudevent.TypeOf(*ev) != evalflow.TypeRequested {
		return evalflow.Request{}, "", evalflow.Invalidf("type", "must be %s, got %q", evalflow.TypeRequested, ev.Type())
	}
	if err := cloudevent.Decode(*ev, new(json.RawMessage)); err != nil {
		return evalflow.Request{}, "", err
	}
	req, err := decode(bytes.NewReader(ev.Data()))
	return req, ev.Source(), err
}

// decode reads a request strictly, checking the task files its datasets bring inline
// as the runner reads them, before anything is stored.
func decode(body io.Reader) (evalflow.Request, error) {
	req, err := evalflow.DecodeRequest(body)
	if err == nil {
		err = usertask.Check("", req.Datasets)
	}
	return req, err
}
