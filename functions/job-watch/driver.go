package function

import (
	"context"
	"fmt"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
)

// drive looks at every run that has not ended, oldest first in each status: one that has stood still in its step
// for DriveAfter gets the event its step waits for again (the same id: a step that
// had it already drops it), and one stalled for FailAfter is failed saying what it
// waited for. Events are lost, and steps die, between a broker and its subscribers.
func (f *Function) drive(ctx context.Context) error {
	for _, st := range []evalflow.Status{evalflow.StatusPending, evalflow.StatusVerifying, evalflow.StatusDeploying, evalflow.StatusRunning, evalflow.StatusStoring} {
		if err := f.Store.Each(ctx, st, func(run *evalflow.Run) error { return f.driveRun(ctx, run) }); err != nil {
			return fmt.Errorf("job-watch: drive stalled runs: %w", err)
		}
	}
	return nil
}

// driveRun drives run if it has stood still too long.
func (f *Function) driveRun(ctx context.Context, run *evalflow.Run) error {
	resend, waiting := run.Stalled()
	still := f.Now().Sub(run.UpdatedAt)
	switch {
	case (waiting == "" && resend == "") || still < f.cfg.DriveAfter:
		return nil
	case waiting != "" && still >= f.cfg.FailAfter:
		_, err := f.Fail(ctx, run.ID, fmt.Sprintf("stalled: %s for %s waiting for %s", run.Status, still.Round(time.Second), waiting))
		return err
	case resend == "":
		return nil
	}
	f.Log.Warn("stalled run driven again", "run_id", run.ID, "status", run.Status, "still_for", still.String(), "resent", resend)
	if err := f.Events.Send(ctx, *f.Next(resend, run.ID)); err != nil {
		return fmt.Errorf("job-watch: drive run %s: %w", run.ID, err)
	}
	return nil
}
