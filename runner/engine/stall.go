package engine

import (
	"fmt"
	"sync"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/openai"
)

// stall watches a run for progress: a run with no finished sample for limit fails,
// saying what the endpoint did meanwhile, rather than retry for as long as each
// request's own retries last.
type stall struct {
	limit time.Duration
	mu    sync.Mutex
	since time.Time // the last finished sample, or the start
	// failed counts the attempts since that got no answer (or an error status), last
	// the last one's outcome: "error", or its status code.
	failed int
	last   string
}

func newStall(limit time.Duration) *stall { return &stall{limit: limit, since: time.Now()} }

// observe wraps a client's Observe hook to count the attempts that fail.
func (s *stall) observe(next func(string, bool, openai.Usage)) func(string, bool, openai.Usage) {
	return func(outcome string, retry bool, u openai.Usage) {
		if outcome != "ok" {
			s.mu.Lock()
			s.failed++
			s.last = outcome
			s.mu.Unlock()
		}
		if next != nil {
			next(outcome, retry, u)
		}
	}
}

// progressed notes a finished sample.
func (s *stall) progressed() {
	s.mu.Lock()
	s.since, s.failed, s.last = time.Now(), 0, ""
	s.mu.Unlock()
}

// check says what the wait is while it lasts ("" while samples finish), and fails the
// run (a permanent error: another attempt of the job would wait the same) once it has
// lasted limit.
func (s *stall) check() (waiting string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	still := time.Since(s.since)
	if s.failed == 0 && still < s.limit {
		return "", nil
	}
	what := fmt.Sprintf("no sample finished for %s", still.Round(time.Second))
	if s.failed > 0 {
		what += fmt.Sprintf("; %d attempts got no usable answer (last: %s)", s.failed, s.last)
	}
	if still >= s.limit {
		return what, evalflow.Permanent(fmt.Errorf("the endpoint answered nothing usable: %s (options.no_progress_seconds: %d)",
			what, int(s.limit.Seconds())))
	}
	return what + ", retrying", nil
}
