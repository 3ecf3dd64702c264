package broker

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// subscriber is a real HTTP subscriber that fails its first `fails` deliveries with
// 503, then accepts, optionally replying with an event.
type subscriber struct {
	*httptest.Server
	calls atomic.Int32
	fails int32
	reply *event.Event
}

func newSubscriber(t *testing.T, fails int32, reply *event.Event) *subscriber {
	s := &subscriber{fails: fails, reply: reply}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if n := s.calls.Add(1); n <= s.fails {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		if s.reply != nil {
			cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(s.reply), http.StatusOK, w)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	return s
}

func trigger(name, typ, subscriberURL, deadLetterURL string, retry int) string {
	return fmt.Sprintf(`apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s, namespace: evalflow}
spec:
  broker: evalflow
  filter:
    attributes: {type: %s}
  subscriber: {uri: "%s"}
  delivery:
    retry: %d
    backoffPolicy: linear
    backoffDelay: PT0.01S
    deadLetterSink: {uri: "%s"}
`, name, typ, subscriberURL, retry, deadLetterURL)
}

func startBroker(t *testing.T, manifests ...string) (*Broker, *httptest.Server) {
	t.Helper()
	dir := t.TempDir()
	for i, m := range manifests {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("t%d.yaml", i)), []byte(m), 0o644)
	}
	noRefs := func(ref *duckv1.KReference) (*url.URL, error) { return nil, fmt.Errorf("no refs here") }
	triggers, err := LoadTriggers(context.Background(), os.DirFS(dir), "evalflow", noRefs)
	if err != nil {
		t.Fatal(err)
	}
	b := New(triggers, Options{})
	srv := httptest.NewServer(b)
	t.Cleanup(func() { b.Shutdown(); srv.Close() })
	return b, srv
}

func send(t *testing.T, brokerURL string, typ evalflow.EventType) {
	t.Helper()
	s, _ := cloudevent.NewSender(brokerURL, nil)
	if err := s.Send(context.Background(), cloudevent.New("test", typ, "run-1", map[string]string{"run_id": "run-1"})); err != nil {
		t.Fatal(err)
	}
}

func idle(t *testing.T, b *Broker) {
	testserver.Eventually(t, 10*time.Second, "broker idle", b.Idle)
}

func TestDeliveryIsRetriedAsTheTriggerSays(t *testing.T) {
	dead := testserver.NewSink(t)
	flaky := newSubscriber(t, 2, nil)
	b, srv := startBroker(t, trigger("flaky", "a", flaky.URL, dead.URL, 3))

	send(t, srv.URL, "a")
	idle(t, b)

	if got := flaky.calls.Load(); got != 3 {
		t.Fatalf("%d deliveries; want 3 (two refused, one accepted)", got)
	}
	if len(dead.Got("/")) != 0 {
		t.Fatal("a delivered event went to the dead letter sink")
	}
}

func TestUndeliverableEventsGoToTheDeadLetterSinkWithKnativesExtensions(t *testing.T) {
	dead := testserver.NewSink(t)
	down := newSubscriber(t, 1000, nil)
	b, srv := startBroker(t, trigger("down", "a", down.URL, dead.URL, 2))

	send(t, srv.URL, "a")
	idle(t, b)

	if got := down.calls.Load(); got != 3 {
		t.Fatalf("%d deliveries; want 1 + 2 retries", got)
	}
	dl := dead.Got("/")
	if len(dl) != 1 || dl[0].Extensions()["knativeerrorcode"] != "503" || dl[0].Extensions()["knativeerrordest"] != down.URL {
		t.Fatalf("dead letters: %v", dl)
	}
}

// As Knative's broker: a subscriber's answer is an empty body or a CloudEvent;
// anything else fails the delivery, which is retried and then dead-lettered.
func TestAReplyThatIsNotACloudEventFailsTheDelivery(t *testing.T) {
	dead := testserver.NewSink(t)
	var calls atomic.Int32
	chatty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(chatty.Close)
	b, srv := startBroker(t, trigger("chatty", "a", chatty.URL, dead.URL, 1))

	send(t, srv.URL, "a")
	idle(t, b)

	if got := calls.Load(); got != 2 || len(dead.Got("/")) != 1 {
		t.Fatalf("%d deliveries, %d dead letters; want 2 and 1", got, len(dead.Got("/")))
	}
}

func TestRepliesAreRoutedAndFiltersHold(t *testing.T) {
	reply := cloudevent.New("test", "b", "run-1", map[string]string{"run_id": "run-1"})
	first := newSubscriber(t, 0, &reply)
	second := newSubscriber(t, 0, nil)
	other := newSubscriber(t, 0, nil)
	dead := testserver.NewSink(t)
	b, srv := startBroker(t,
		trigger("first", "a", first.URL, dead.URL, 0),
		trigger("second", "b", second.URL, dead.URL, 0),
		trigger("other", "c", other.URL, dead.URL, 0))

	send(t, srv.URL, "a")
	idle(t, b)

	if first.calls.Load() != 1 || second.calls.Load() != 1 || other.calls.Load() != 0 {
		t.Fatalf("deliveries: first %d, second %d (the reply), other %d", first.calls.Load(), second.calls.Load(), other.calls.Load())
	}
}

func TestIngressRefusesWhatIsNotACloudEvent(t *testing.T) {
	_, srv := startBroker(t, trigger("x", "a", "http://127.0.0.1:1", "http://127.0.0.1:1", 0))

	resp, err := http.Post(srv.URL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("answered %d; want 400", resp.StatusCode)
	}
}

func TestInFlightSaysWhatKeepsTheBrokerBusy(t *testing.T) {
	release := make(chan struct{})
	sub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(sub.Close)
	b, srv := startBroker(t, trigger("slow", "dev.evalflow.test.slow", sub.URL, sub.URL, 0))

	send(t, srv.URL, "dev.evalflow.test.slow")
	testserver.Eventually(t, 10*time.Second, "a delivery being sent", func() bool {
		in := b.InFlight()
		return len(in) == 1 && strings.Contains(in[0], "sending, attempt 1")
	})
	if got := b.InFlight()[0]; !strings.Contains(got, "slow <- dev.evalflow.test.slow") {
		t.Errorf("InFlight = %q", got)
	}
	close(release)
	idle(t, b)
	if got := b.InFlight(); len(got) != 0 {
		t.Errorf("InFlight after the delivery = %q", got)
	}
}

func TestIngressTakesEventsOnlyWithItsTokenButWhatOpenLetsIn(t *testing.T) {
	sub := newSubscriber(t, 0, nil)
	dead := testserver.NewSink(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "t.yaml"), []byte(trigger("t", "", sub.URL, dead.URL, 0)), 0o644)
	triggers, err := LoadTriggers(context.Background(), os.DirFS(dir), "evalflow", nil)
	if err != nil {
		t.Fatal(err)
	}
	b := New(triggers, Options{IngressToken: "s3cret", Open: func(ev event.Event) bool { return ev.Type() == "signed-report" }})
	srv := httptest.NewServer(b)
	t.Cleanup(func() { b.Shutdown(); srv.Close() })

	post := func(client *http.Client, typ evalflow.EventType) error {
		s, _ := cloudevent.NewSender(srv.URL, client)
		s.Retries = 0
		return s.Send(context.Background(), cloudevent.New("test", typ, "run-1", map[string]string{"run_id": "run-1"}))
	}
	if err := post(nil, "run-verified"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("an event without the token: %v; want 401", err)
	}
	if err := post(cloudevent.Bearer("wrong"), "run-verified"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("an event with another token: %v; want 401", err)
	}
	idle(t, b)
	if n := sub.calls.Load(); n != 0 {
		t.Fatalf("%d refused events delivered", n)
	}
	if err := post(cloudevent.Bearer("s3cret"), "run-verified"); err != nil {
		t.Errorf("an event with the token: %v", err)
	}
	if err := post(nil, "signed-report"); err != nil {
		t.Errorf("an event Open lets in, without the token: %v", err)
	}
	idle(t, b)
	if n := sub.calls.Load(); n != 2 {
		t.Errorf("%d events delivered; want the 2 let in", n)
	}
}
