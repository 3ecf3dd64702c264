package cloudevent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/evalflow/evalflow/shared/cloudevent"
)

// serve starts an HTTP server that serves events with cloudevent.Serve and h.
func serve(t *testing.T, h cloudevent.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cloudevent.Serve(w, r, h)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func post(ctx context.Context, url string, e event.Event) (*http.Response, error) {
	// Posted by hand in binary mode: the raw answer is what is asserted.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(string(e.Data())))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", e.ID())
	req.Header.Set("Ce-Type", e.Type())
	req.Header.Set("Ce-Source", e.Source())
	req.Header.Set("Content-Type", "application/json")
	return http.DefaultClient.Do(req)
}

func testEvent(id string) event.Event {
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetType("dev.evalflow.test")
	e.SetSource("test")
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]string{"id": id})
	return e
}

// Senders that give up mid-delivery, beside others that wait: every event is handled
// with its own request's context (none is cancelled by another's sender giving up),
// every waiting sender is answered, and an event sent alone afterwards is answered
// without another request to push it through. sdk-go's own receive handler fails this
// now and then, when its goroutines interleave so (cloudevents/sdk-go#1224); Serve
// handles each request's event in the request's own goroutine, so never.
func TestEachEventIsHandledWithItsOwnRequest(t *testing.T) {
	// More threads than cores: requests' goroutines interleave in more ways.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	var mismatched atomic.Int64
	url := serve(t, func(ctx context.Context, e event.Event) (*event.Event, error) {
		if strings.HasPrefix(e.ID(), "gives-up-") {
			select { // held until its sender gives up
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
			}
			return nil, ctx.Err()
		}
		select { // a moment's work, long enough for a sender beside it to give up
		case <-ctx.Done(): // its own sender waits: this is another request's context
			mismatched.Add(1)
			return nil, ctx.Err()
		case <-time.After(30 * time.Millisecond):
		}
		return nil, nil
	})

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			if resp, err := post(ctx, url, testEvent(fmt.Sprint("gives-up-", i))); err == nil {
				resp.Body.Close()
				errs <- fmt.Errorf("an event whose sender gave up was answered %s", resp.Status)
			}
		}()
		go func() {
			defer wg.Done()
			// Generous: a waiting sender is answered at once, or never (left for the next request).
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			resp, err := post(ctx, url, testEvent(fmt.Sprint("waits-", i)))
			if err != nil {
				errs <- fmt.Errorf("waits-%d: %w", i, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("waits-%d answered %s", i, resp.Status)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := mismatched.Load(); n > 0 {
		t.Errorf("%d events were handled with another request's context", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := post(ctx, url, testEvent("alone"))
	if err != nil {
		t.Fatalf("an event sent alone after the rest was not answered: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("an event sent alone: %s", resp.Status)
	}
}

// What a sender sees: the reply event, an empty 200, 500 for a handler's error (send
// again), 400 for a request that is not an event, 405 for anything but POST.
func TestServeAnswers(t *testing.T) {
	url := serve(t, func(ctx context.Context, e event.Event) (*event.Event, error) {
		switch e.ID() {
		case "replies":
			r := testEvent("the-reply")
			r.SetType("dev.evalflow.test.reply")
			return &r, nil
		case "fails":
			return nil, errors.New("redis at redis:6379: connection refused")
		}
		return nil, nil
	})
	ctx := context.Background()

	resp, err := post(ctx, url, testEvent("replies"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Ce-Type") != "dev.evalflow.test.reply" ||
		resp.Header.Get("Ce-Id") != "the-reply" || string(body) != `{"id":"the-reply"}` {
		t.Errorf("the reply: %s %v %s", resp.Status, resp.Header, body)
	}

	resp, err = post(ctx, url, testEvent("quiet"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Ce-Id") != "" {
		t.Errorf("no reply: %s %q", resp.Status, body)
	}

	resp, err = post(ctx, url, testEvent("fails"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(string(body), "redis") {
		t.Errorf("a handler's error: %s %q (the error stays in the function's log)", resp.Status, body)
	}

	resp, err = http.Post(url, "application/json", strings.NewReader(`{"run_id":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("not an event: %s %q", resp.Status, body)
	}
	if !strings.Contains(string(body), "not a valid CloudEvent") {
		t.Errorf("not an event: the answer does not say so: %q", body)
	}

	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
}
