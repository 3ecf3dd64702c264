package testserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Sink is a CloudEvents receiver on loopback that records what it is sent, by path.
type Sink struct {
	*httptest.Server
	mu     sync.Mutex
	events map[string][]event.Event
	raw    []byte
}

// NewSink starts a Sink for the test.
func NewSink(t testing.TB) *Sink { return NewSinkOn(t, "") }

// NewSinkOn starts a Sink for the test on a free port of host, an address of this
// machine (127.0.0.1 when empty), e.g. a node's address, where its pods reach it.
func NewSinkOn(t testing.TB, host string) *Sink {
	s := &Sink{events: map[string][]event.Event{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// sdk-go's reading, not evalflow's (shared/cloudevent): devkit is below shared.
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err == nil {
			err = ev.Validate()
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b, _ := ev.MarshalJSON()
		s.mu.Lock()
		s.events[r.URL.Path] = append(s.events[r.URL.Path], *ev)
		s.raw = append(append(s.raw, b...), '\n')
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	if host != "" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		s.Server.Listener.Close()
		s.Server.Listener = l
	}
	s.Server.Start()
	t.Cleanup(s.Close)
	return s
}

// Got returns the events sent to path.
func (s *Sink) Got(path string) []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.events[path]...)
}

// OfType returns the events of type typ sent to path.
func (s *Sink) OfType(path string, typ fmt.Stringer) []event.Event {
	var out []event.Event
	for _, e := range s.Got(path) {
		if e.Type() == typ.String() {
			out = append(out, e)
		}
	}
	return out
}

// Raw is every event received, as JSON lines.
func (s *Sink) Raw() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.raw...)
}

// DeliverConcurrently posts ev to a function's HTTP handler n times at once, as a
// broker redelivering it might, and returns the types of the replies. An answer that is
// not a success fails the test.
func DeliverConcurrently(t testing.TB, n int, handle http.HandlerFunc, ev event.Event) []string {
	t.Helper()
	srv := httptest.NewServer(handle)
	defer srv.Close()
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var replies []string
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, res := c.Request(context.Background(), ev)
			if !cloudevents.IsACK(res) {
				t.Errorf("delivering %s: %v", ev.Type(), res)
			}
			if reply != nil {
				mu.Lock()
				replies = append(replies, reply.Type())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return replies
}

// Eventually polls cond until it holds or within passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CountConnections listens on host (a free port) for the test and counts the
// connections it accepts: what a sandboxed program must never reach.
func CountConnections(t testing.TB, host string) (*net.TCPAddr, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr), &n
}

// HeaderSink is a server on loopback that answers 202 to everything and records one
// header of each request (e.g. the Authorization a sender sent), in order.
type HeaderSink struct {
	*httptest.Server
	mu  sync.Mutex
	got []string
}

// NewHeaderSink starts a HeaderSink recording header, for the test.
func NewHeaderSink(t testing.TB, header string) *HeaderSink {
	s := &HeaderSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.got = append(s.got, r.Header.Get(header))
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	return s
}

// Got is the header of each request so far ("" where a request had none).
func (s *HeaderSink) Got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}
