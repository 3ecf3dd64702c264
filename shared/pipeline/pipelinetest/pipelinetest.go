// Package pipelinetest is what a step function's test needs: a real Redis, a sink
// standing in for the broker, and the configuration pointing at both.
package pipelinetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/runstore"
	"github.com/evalflow/evalflow/shared/seal"
)

// Pipeline is what a step function's test needs: a real Redis, a sink standing in
// for the broker (K_SINK), and the function's configuration pointing at both.
type Pipeline struct {
	Config map[string]string
	Store  *runstore.Store
	Redis  *redis.Client
	Sink   *testserver.Sink
}

// New starts Redis and a sink for a function test.
func New(t testing.TB) *Pipeline {
	t.Helper()
	addr := testserver.Redis(t)
	sink := testserver.NewSink(t)
	key := seal.NewKey()
	k, _ := seal.ParseKey(key)
	sealer, err := seal.New(k)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	return &Pipeline{
		Config: map[string]string{"REDIS_ADDR": addr, "EVALFLOW_SEAL_KEY": key, "K_SINK": sink.URL, "LOG_LEVEL": "warn"},
		Store:  runstore.New(rdb, sealer), Redis: rdb, Sink: sink,
	}
}

// With returns the pipeline's configuration plus a function's own settings.
func (p *Pipeline) With(own map[string]string) map[string]string {
	cfg := make(map[string]string, len(p.Config)+len(own))
	for k, v := range p.Config {
		cfg[k] = v
	}
	for k, v := range own {
		cfg[k] = v
	}
	return cfg
}

// Update reads run id and applies change to it (runstore.Store.UpdateRun): a test's
// move of a run, as a step would make it from the run it read.
func Update(ctx context.Context, store *runstore.Store, id string, change func(*evalflow.Run) error, opts ...runstore.UpdateOption) (*evalflow.Run, error) {
	r, err := store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return store.UpdateRun(ctx, r, change, opts...)
}

// Walk is an update that moves a run step by step to status to, as the steps would
// (a run may not skip one): a test's setup for a run in the middle of the pipeline.
func Walk(to evalflow.Status) func(*evalflow.Run) error {
	return func(r *evalflow.Run) error {
		for {
			err := r.Advance(to, time.Now())
			if !errors.Is(err, evalflow.ErrOutOfTurn) {
				return err
			}
			if err := r.Advance(nextOf(r.Status), time.Now()); err != nil {
				return err
			}
		}
	}
}

// nextOf is the status the step after status s moves a run to.
func nextOf(s evalflow.Status) evalflow.Status {
	for i, st := range evalflow.Steps[:len(evalflow.Steps)-1] {
		if st.Status == s {
			return evalflow.Steps[i+1].Status
		}
	}
	return evalflow.StatusSucceeded
}
