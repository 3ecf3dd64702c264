package engine

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MaxAutoConcurrency bounds the concurrency sized to the endpoint.
const MaxAutoConcurrency = 64

// gate lets at most limit requests be in flight; its limit can change. A nil gate
// lets everything through.
type gate struct {
	mu       sync.Mutex
	cond     *sync.Cond
	limit    int
	inFlight int
}

func newGate(limit int) *gate {
	g := &gate{limit: limit}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) acquire() {
	if g == nil {
		return
	}
	g.mu.Lock()
	for g.inFlight >= g.limit {
		g.cond.Wait()
	}
	g.inFlight++
	g.mu.Unlock()
}

func (g *gate) release() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) set(limit int) {
	g.mu.Lock()
	g.limit = limit
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) current() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit
}

// sizer sizes a gate to the endpoint: from evalflow.DefaultConcurrency (a good level
// for most servers, and no loss on a one-slot server, which queues), it doubles the
// limit while a window's throughput beats the best so far by more than 25 %, then
// settles on the best limit. A window lasts at least 4 × limit completions and a second.
// The first window is a warm-up, not measured: it pays for connections and for a
// server loading its model, and would make any level after it look faster.
type sizer struct {
	g         *gate
	start     time.Time
	n         int
	warm      bool
	best      float64
	bestLimit int
	done      bool
}

// gain is the rise in throughput that doubling the limit must bring to be kept: where
// an endpoint has room, doubling nearly doubles it; where it has none, windows differ
// by their noise (a tenth or so), which must not read as room.
const gain = 1.25

func newSizer(g *gate) *sizer {
	s := &sizer{g: g, start: time.Now(), done: g == nil}
	if g != nil {
		s.bestLimit = g.current()
	}
	return s
}

func (z *sizer) completed() {
	if z.done {
		return
	}
	z.n++
	limit := z.g.current()
	elapsed := time.Since(z.start)
	if z.n < 4*limit || elapsed < time.Second {
		return
	}
	rate := float64(z.n) / elapsed.Seconds()
	switch {
	case !z.warm:
		z.warm = true
	case rate > gain*z.best && limit < MaxAutoConcurrency:
		z.best, z.bestLimit = rate, limit
		z.g.set(limit * 2)
	case rate > gain*z.best:
		z.best, z.bestLimit, z.done = rate, limit, true
	default:
		z.g.set(z.bestLimit)
		z.done = true
	}
	z.start, z.n = time.Now(), 0
}

// NewTokenLimiter caps tokens per minute; nil for no cap.
func NewTokenLimiter(perMinute int) *rate.Limiter {
	if perMinute <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
}

// NewRequestLimiter caps requests per second; nil for no cap.
func NewRequestLimiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), 1) // a burst of one: a cap, not an average
}
