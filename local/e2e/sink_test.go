package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// sink records the CloudEvents the broker delivers to it, by path.
type sink struct {
	*httptest.Server
	mu     sync.Mutex
	events map[string][]event.Event
	raw    []byte
}

func newSink(t *testing.T) *sink {
	s := &sink{events: map[string][]event.Event{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := binding.ToEvent(context.Background(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.events[r.URL.Path] = append(s.events[r.URL.Path], *ev)
		b, _ := ev.MarshalJSON()
		s.raw = append(append(s.raw, b...), '\n')
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sink) got(path string) []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.events[path]...)
}

func (s *sink) all() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.raw...)
}
