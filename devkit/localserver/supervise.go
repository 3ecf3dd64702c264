package localserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Supervisor keeps a server running: started again, with exponential backoff, each
// time it exits by itself (a crash, a kill -9), until Stop.
type Supervisor struct {
	name  string
	start func(context.Context) (*Proc, error)
	log   *slog.Logger

	mu       sync.Mutex
	cur      *Proc
	restarts int
	stop     context.CancelFunc
	done     chan struct{}
}

// Supervise starts a server with start, then keeps it running. The first start's
// error is returned; later ones are retried until one succeeds or Stop.
func Supervise(ctx context.Context, name string, log *slog.Logger, start func(context.Context) (*Proc, error)) (*Supervisor, error) {
	p, err := start(ctx)
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s := &Supervisor{name: name, start: start, log: log, cur: p, stop: stop, done: make(chan struct{})}
	go s.watch(sctx)
	return s, nil
}

func (s *Supervisor) watch(ctx context.Context) {
	defer close(s.done)
	for {
		s.mu.Lock()
		p := s.cur
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-p.done:
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("server exited; starting it again", "server", s.name, "exit", p.cmd.ProcessState.String(), "log", p.Log)
		b := backoff.NewExponentialBackOff()
		b.InitialInterval, b.MaxInterval = 100*time.Millisecond, 10*time.Second
		next, err := backoff.Retry(ctx, func() (*Proc, error) {
			next, err := s.start(ctx)
			if err != nil {
				s.log.Error("server did not start again; retrying", "server", s.name, "error", err)
			}
			return next, err
		}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0))
		if err != nil { // stopped meanwhile
			return
		}
		s.mu.Lock()
		s.cur = next
		s.restarts++
		s.mu.Unlock()
	}
}

// PID is the server's current process id.
func (s *Supervisor) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.cmd.Process.Pid
}

// Restarts counts the times the server was started again.
func (s *Supervisor) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Stop stops supervising, then the server.
func (s *Supervisor) Stop() {
	s.stop()
	<-s.done
	s.mu.Lock()
	p := s.cur
	s.mu.Unlock()
	p.Stop()
}
