package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Exec runs evalflow-sandbox in the sandbox pod with a batch (JSON) on stdin, its
// lines on stdout; an error is the exec's, with what the program said on stderr.
type Exec func(ctx context.Context, stdin io.Reader, stdout io.Writer) error

// Pod runs programs in a Kubernetes run's sandbox pod, in batches: the programs that
// wait together (up to BatchSize, or what came within BatchWait of the first) go in
// one exec, one batch at a time.
type Pod struct {
	exec   Exec
	limits Limits

	mu      sync.Mutex
	pending []waiter
	timer   *time.Timer
	busy    chan struct{} // one batch at a time
}

// BatchSize and BatchWait bound a batch: a HumanEval program is a few KB.
const (
	BatchSize = 64
	BatchWait = 200 * time.Millisecond
)

type waiter struct {
	program string
	done    chan outcomeOrError
}

type outcomeOrError struct {
	r   Result
	err error
}

// NewPod is the sandbox pod reached by exec, once a program as simple as print('ok')
// has run there: else an error saying what failed, before any sample is spent.
func NewPod(ctx context.Context, exec Exec, limits Limits) (*Pod, error) {
	p := &Pod{exec: exec, limits: limits, busy: make(chan struct{}, 1)}
	r, err := p.Run(ctx, "print('ok')")
	if err == nil && !r.Passed {
		err = fmt.Errorf("print('ok') %s", r.Outcome)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the sandbox pod does not run a program: %w", ErrUnavailable, err)
	}
	return p, nil
}

// Run hands program to the next batch and waits for what became of it; an error is
// the sandbox's (the batch did not run), never the program's.
func (p *Pod) Run(ctx context.Context, program string) (Result, error) {
	w := waiter{program: program, done: make(chan outcomeOrError, 1)}
	p.mu.Lock()
	p.pending = append(p.pending, w)
	switch {
	case len(p.pending) >= BatchSize:
		go p.flush(p.take())
	case len(p.pending) == 1:
		p.timer = time.AfterFunc(BatchWait, func() {
			p.mu.Lock()
			batch := p.take()
			p.mu.Unlock()
			p.flush(batch)
		})
	}
	p.mu.Unlock()
	select {
	case o := <-w.done:
		return o.r, o.err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("sandbox: %w", ctx.Err())
	}
}

// take is the pending batch, now no longer pending (p.mu held).
func (p *Pod) take() []waiter {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	batch := p.pending
	p.pending = nil
	return batch
}

// flush runs batch in the pod, after the batch before it, and tells each waiter.
func (p *Pod) flush(batch []waiter) {
	if len(batch) == 0 {
		return
	}
	p.busy <- struct{}{}
	defer func() { <-p.busy }()
	b := Batch{Limits: Of(p.limits), Programs: make([]string, len(batch))}
	for i, w := range batch {
		b.Programs[i] = w.program
	}
	results, err := p.runBatch(b)
	for i, w := range batch {
		if err != nil {
			w.done <- outcomeOrError{err: err}
			continue
		}
		w.done <- outcomeOrError{r: results[i]}
	}
}

// runBatch execs evalflow-sandbox with b, within the time its programs may take one
// after another and a minute more.
func (p *Pod) runBatch(b Batch) ([]Result, error) {
	in, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(b.Programs))*p.limits.Wall+time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := p.exec(ctx, bytes.NewReader(in), &out); err != nil {
		return nil, fmt.Errorf("sandbox: a batch of %d programs: %w", len(b.Programs), err)
	}
	return ReadLines(&out, len(b.Programs))
}
