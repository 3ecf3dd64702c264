package broker

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"knative.dev/eventing/pkg/eventfilter"

	"github.com/evalflow/evalflow/shared/cloudevent"
)

// Broker routes events to its triggers' subscribers.
type Broker struct {
	triggers []Trigger
	client   *http.Client
	token    string
	ingress  string
	open     func(event.Event) bool
	lose     func(event.Event) bool
	log      *slog.Logger
	slots    chan struct{}
	wg       sync.WaitGroup
	inFlight atomic.Int64
	// busy describes each delivery under way, for InFlight.
	busyMu sync.Mutex
	busy   map[*delivery]struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

// Options tune a Broker; zero values mean defaults.
type Options struct {
	// MaxInFlight bounds concurrent deliveries (default 256).
	MaxInFlight int
	Client      *http.Client
	Log         *slog.Logger
	// Lose, when set, is asked of every event published: an event it says yes to is
	// accepted and then lost, never delivered, as a broker that goes down with events
	// in flight (Knative's in-memory channel) loses them. For tests of what evalflow
	// does about lost events; nil loses nothing.
	Lose func(event.Event) bool
	// DeliveryToken, when set, goes with every delivery as a bearer token: the
	// subscriber knows the delivery is the broker's (start takes run.requested only
	// from a caller or from it).
	DeliveryToken string
	// IngressToken, when set, is the bearer token an event posted to the ingress
	// must carry (401 without it: nothing is published), but for those Open lets in
	// without one (events whose sender proves itself otherwise).
	IngressToken string
	Open         func(event.Event) bool
}

// New returns a Broker over triggers.
func New(triggers []Trigger, opts Options) *Broker {
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 256
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Broker{triggers: triggers, client: opts.Client, log: opts.Log, token: opts.DeliveryToken, lose: opts.Lose,
		ingress: opts.IngressToken, open: opts.Open, slots: make(chan struct{}, opts.MaxInFlight), ctx: ctx, cancel: cancel}
}

// ServeHTTP is the broker's ingress: a CloudEvent in binary or structured mode is
// accepted with 202 and delivered asynchronously.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ev, err := cloudevent.Read(w, r)
	if err != nil {
		http.Error(w, "not a valid CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !b.admits(r, *ev) {
		b.log.Warn("event without the ingress token refused", "type", ev.Type(), "id", ev.ID(), "source", ev.Source(), "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="evalflow broker"`)
		http.Error(w, "this broker takes events only from evalflow's own processes (Authorization: Bearer)", http.StatusUnauthorized)
		return
	}
	b.Publish(*ev)
	w.WriteHeader(http.StatusAccepted)
}

// admits is whether the ingress takes ev posted with r: with its token, or as an
// event Open lets in.
func (b *Broker) admits(r *http.Request, ev event.Event) bool {
	if b.ingress == "" || b.open != nil && b.open(ev) {
		return true
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(token), []byte(b.ingress)) == 1
}

// Publish delivers ev to every trigger whose filter passes it.
func (b *Broker) Publish(ev event.Event) {
	if b.lose != nil && b.lose(ev) {
		b.log.Warn("event lost (Options.Lose)", "type", ev.Type(), "id", ev.ID(), "subject", ev.Subject())
		return
	}
	for i := range b.triggers {
		t := &b.triggers[i]
		if t.Filter.Filter(b.ctx, ev) == eventfilter.FailFilter {
			continue
		}
		b.wg.Add(1)
		b.inFlight.Add(1)
		d := &delivery{trigger: t.Name, event: ev.Type() + " " + ev.ID(), since: time.Now(), state: "waiting for a slot"}
		b.track(d, true)
		go func() {
			defer b.wg.Done()
			defer b.inFlight.Add(-1)
			defer b.track(d, false)
			select {
			case b.slots <- struct{}{}:
			case <-b.ctx.Done():
				return
			}
			defer func() { <-b.slots }()
			b.deliver(t, ev, d)
		}()
	}
}

// delivery is one delivery under way, as InFlight describes it.
type delivery struct {
	trigger, event string
	since          time.Time
	mu             sync.Mutex
	state          string
}

func (d *delivery) set(state string) {
	d.mu.Lock()
	d.state = state
	d.mu.Unlock()
}

func (b *Broker) track(d *delivery, on bool) {
	b.busyMu.Lock()
	defer b.busyMu.Unlock()
	if b.busy == nil {
		b.busy = map[*delivery]struct{}{}
	}
	if on {
		b.busy[d] = struct{}{}
	} else {
		delete(b.busy, d)
	}
}

// InFlight describes the deliveries under way (trigger, event, state, age), oldest
// first: what keeps the broker from being idle.
func (b *Broker) InFlight() []string {
	b.busyMu.Lock()
	ds := make([]*delivery, 0, len(b.busy))
	for d := range b.busy {
		ds = append(ds, d)
	}
	b.busyMu.Unlock()
	sort.Slice(ds, func(i, j int) bool { return ds[i].since.Before(ds[j].since) })
	out := make([]string, len(ds))
	for i, d := range ds {
		d.mu.Lock()
		out[i] = fmt.Sprintf("%s <- %s: %s for %s", d.trigger, d.event, d.state, time.Since(d.since).Round(time.Millisecond))
		d.mu.Unlock()
	}
	return out
}

// Idle reports whether no delivery is under way (replies are published before the
// delivery that caused them ends, so an idle broker has nothing left to route).
func (b *Broker) Idle() bool { return b.inFlight.Load() == 0 }

// Shutdown stops delivering and waits for deliveries under way to give up.
func (b *Broker) Shutdown() {
	b.cancel()
	b.wg.Wait()
}

// deliver sends ev to t's subscriber with t's retry policy; a reply is published; an
// event that cannot be delivered goes to the dead letter sink.
func (b *Broker) deliver(t *Trigger, ev event.Event, d *delivery) {
	log := b.log.With("trigger", t.Name, "type", ev.Type(), "id", ev.ID(), "subject", ev.Subject())
	var lastCode int
	var lastErr error
	for attempt := 0; attempt <= t.Retry.RetryMax; attempt++ {
		if attempt > 0 {
			delay := t.Retry.Backoff(attempt, nil)
			d.set(fmt.Sprintf("waiting %s to retry (attempt %d failed: code %d, %v)", delay, attempt, lastCode, lastErr))
			select {
			case <-time.After(delay):
			case <-b.ctx.Done():
				return
			}
		}
		d.set(fmt.Sprintf("sending, attempt %d", attempt+1))
		resp, reply, err := b.send(t.Subscriber, t.Retry.RequestTimeout, ev)
		retry, _ := t.Retry.CheckRetry(b.ctx, resp, err)
		if resp != nil {
			lastCode = resp.StatusCode
		}
		lastErr = err
		if err == nil && resp.StatusCode < 300 {
			log.Debug("delivered", "attempt", attempt+1)
			if reply != nil {
				b.Publish(*reply)
			}
			return
		}
		if !retry {
			break
		}
		log.Debug("delivery failed; retrying", "attempt", attempt+1, "code", lastCode, "error", err)
	}
	log.Warn("delivery failed", "subscriber", t.Subscriber.String(), "code", lastCode, "error", lastErr)
	if t.DeadLetter != nil {
		b.deadLetter(t, ev, lastCode, lastErr)
	}
}

// send posts ev in binary mode and reads a reply event, if any.
func (b *Broker) send(to *url.URL, timeout time.Duration, ev event.Event) (*http.Response, *event.Event, error) {
	ctx := b.ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, to.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), req); err != nil {
		return nil, nil, err
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return resp, nil, nil
	}
	msg := cehttp.NewMessageFromHttpResponse(resp)
	if msg.ReadEncoding() == binding.EncodingUnknown {
		// As Knative's broker: a reply is empty or a CloudEvent; anything else fails
		// the delivery.
		if n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); n > 0 {
			return resp, nil, errors.New("a non-empty reply that is not a CloudEvent")
		}
		return resp, nil, nil
	}
	reply, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return resp, nil, fmt.Errorf("bad reply: %w", err)
	}
	return resp, reply, nil
}

// deadLetter sends ev to the dead letter sink with Knative's error extensions.
func (b *Broker) deadLetter(t *Trigger, ev event.Event, code int, cause error) {
	dl := ev.Clone()
	dl.SetExtension("knativeerrordest", t.Subscriber.String())
	dl.SetExtension("knativeerrorcode", strconv.Itoa(code))
	if cause != nil {
		dl.SetExtension("knativeerrordata", base64.StdEncoding.EncodeToString([]byte(cause.Error())))
	}
	resp, _, err := b.send(t.DeadLetter, 10*time.Second, dl)
	if err == nil && resp.StatusCode >= 300 {
		err = errors.New(resp.Status)
	}
	if err != nil {
		b.log.Error("dead letter sink refused the event", "trigger", t.Name, "id", ev.ID(), "error", err)
	}
}
