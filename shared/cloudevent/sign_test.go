package cloudevent_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

func TestASignedReportVerifiesOnlyAsSent(t *testing.T) {
	key, other := []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")
	report := func() cloudevents.Event {
		e := cloudevent.New(evalflow.StepWatch, evalflow.TypeJobFinished, "r1",
			evalflow.JobFinished{RunID: "r1", Job: "evalflow-r1", Succeeded: true}, "runner")
		cloudevent.Sign(&e, key)
		return e
	}
	if e := report(); !cloudevent.Verify(e, key) {
		t.Fatal("a signed report does not verify with its key")
	}
	if e := report(); cloudevent.Verify(e, other) {
		t.Error("a report verifies with another run's key")
	}
	unsigned := cloudevent.New(evalflow.StepWatch, evalflow.TypeJobFinished, "r1", evalflow.JobFinished{RunID: "r1"})
	if cloudevent.Verify(unsigned, key) {
		t.Error("an unsigned report verifies")
	}
	for name, tamper := range map[string]func(*cloudevents.Event){
		"data": func(e *cloudevents.Event) {
			_ = e.SetData(cloudevents.ApplicationJSON, evalflow.JobFinished{RunID: "r1", Succeeded: false})
		},
		"subject": func(e *cloudevents.Event) { e.SetSubject("r2") },
		"type":    func(e *cloudevents.Event) { e.SetType(string(evalflow.TypeJobProgress)) },
		"id":      func(e *cloudevents.Event) { e.SetID("another") },
	} {
		e := report()
		tamper(&e)
		if cloudevent.Verify(e, key) {
			t.Errorf("a report whose %s changed still verifies", name)
		}
	}
}

// A signed report still verifies after it crossed HTTP, in binary and structured mode
// alike (a broker may forward it either way).
func TestASignedReportVerifiesAfterHTTP(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	e := cloudevent.New(evalflow.StepWatch, evalflow.TypeJobProgress, "r1",
		evalflow.JobProgress{RunID: "r1", Job: "evalflow-r1", Progress: evalflow.Progress{Phase: "requesting", Done: 3, Total: 9}}, "3")
	cloudevent.Sign(&e, key)
	for _, structured := range []bool{false, true} {
		var got *cloudevents.Event
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var err error
			if got, err = binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r)); err != nil {
				t.Error(err)
			}
		}))
		req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
		ctx := context.Background()
		if structured {
			ctx = binding.WithForceStructured(ctx)
		}
		if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Close()
		if got == nil || !cloudevent.Verify(*got, key) {
			t.Errorf("structured %v: the report no longer verifies after HTTP", structured)
		}
	}
}
