package pipeline

import (
	"context"
	"fmt"
)

// KeepTicking makes sure job-watch's tick is there, where it is made on demand: a step
// that puts a run in flight calls it once the run is recorded.
func (e *Env) KeepTicking(ctx context.Context) error {
	if e.ticker == nil {
		return nil
	}
	if err := e.ticker.Ensure(ctx); err != nil {
		return fmt.Errorf("%s: %w", e.Step, err)
	}
	return nil
}

// StopTickingIfIdle removes job-watch's tick, where it is made on demand, when no run
// is in flight; then looks again, and makes it again for a run recorded meanwhile (whose
// KeepTicking may have come before the removal).
func (e *Env) StopTickingIfIdle(ctx context.Context) error {
	if e.ticker == nil {
		return nil
	}
	if idle, err := e.idle(ctx); err != nil || !idle {
		return err
	}
	if err := e.ticker.Remove(ctx); err != nil {
		return fmt.Errorf("%s: %w", e.Step, err)
	}
	if e.tickRemoved != nil {
		e.tickRemoved()
	}
	if idle, err := e.idle(ctx); err != nil || idle {
		return err
	}
	e.Log.Info("a run came while the tick was removed: made again")
	return e.KeepTicking(ctx)
}

// idle is whether no run is in flight.
func (e *Env) idle(ctx context.Context) (bool, error) {
	counts, _, err := e.Store.Counts(ctx)
	if err != nil {
		return false, fmt.Errorf("%s: %w", e.Step, err)
	}
	for st, n := range counts {
		if !st.Terminal() && n > 0 {
			return false, nil
		}
	}
	return true, nil
}
