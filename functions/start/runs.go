package function

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/runstore"
)

// RunView is a run as the API shows it, with the pipeline's steps.
type RunView struct {
	*evalflow.Run
	Steps []evalflow.StepInfo `json:"steps"`
}

func (f *Function) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	run, err := f.owned(r.Context(), id)
	if err == nil {
		err = f.placeInLine(r.Context(), run)
	}
	if err != nil {
		f.writeError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, RunView{Run: run, Steps: evalflow.Steps})
}

// timeline answers run id's history: every notification of every step, oldest first.
func (f *Function) timeline(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := f.owned(r.Context(), id); err != nil {
		f.writeError(w, id, err)
		return
	}
	events, err := f.Store.History(r.Context(), id)
	if err != nil {
		f.writeError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"run_id": id, "events": events})
}

// deadLetters answers the events Triggers could not deliver: every one for an
// operator, those of the caller's own runs for a caller (?run_id= for one run's).
func (f *Function) deadLetters(w http.ResponseWriter, r *http.Request) {
	ctx, runID := r.Context(), r.URL.Query().Get("run_id")
	all, err := f.Store.DeadLetters(ctx, runID)
	if err != nil {
		f.writeError(w, runID, err)
		return
	}
	who, shown := callerOf(ctx), []evalflow.DeadLetter{}
	for _, d := range all {
		if who.name != auth.Operator {
			if _, err := f.owned(ctx, d.RunID); err != nil {
				continue // another caller's run, or none
			}
		}
		shown = append(shown, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": shown})
}

// placeInLine shows each waiting run's place in line as it is now (the run records
// the place it had when it was put in line).
func (f *Function) placeInLine(ctx context.Context, runs ...*evalflow.Run) error {
	var waiting []*evalflow.Run
	var ids []string
	for _, run := range runs {
		if run.Queued && !run.Status.Terminal() {
			waiting, ids = append(waiting, run), append(ids, run.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	places, err := f.Store.QueuePositions(ctx, ids...)
	if err != nil {
		return err
	}
	for i, run := range waiting {
		run.QueuePosition = places[i]
	}
	return nil
}

// owned is run id, if the request's caller may see it: another caller's run is
// evalflow.ErrNotFound, as one that does not exist.
func (f *Function) owned(ctx context.Context, id string) (*evalflow.Run, error) {
	run, err := f.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !callerOf(ctx).sees(run) {
		return nil, evalflow.ErrNotFound
	}
	return run, nil
}

func (f *Function) list(w http.ResponseWriter, r *http.Request) {
	opts := runstore.ListOptions{Status: evalflow.Status(r.URL.Query().Get("status"))}
	if who := callerOf(r.Context()); who.name != auth.Operator {
		opts.Caller = who.name
	}
	if opts.Status != "" && !opts.Status.Valid() {
		f.writeError(w, "", evalflow.Invalidf("status", "unknown status %q", opts.Status))
		return
	}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			f.writeError(w, "", evalflow.Invalidf("limit", "must be a number from 1 to 1000"))
			return
		}
		opts.Limit = n
	}
	runs, err := f.Store.List(r.Context(), opts)
	if err != nil {
		f.writeError(w, "", err)
		return
	}
	if err := f.placeInLine(r.Context(), runs...); err != nil {
		f.writeError(w, "", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
}

// cancel ends a run as cancelled and tells deploy to stop its job. Cancelling a
// cancelled run again is fine; cancelling one that has ended otherwise is a conflict.
func (f *Function) cancel(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	run, err := f.owned(ctx, id)
	if err != nil {
		f.writeError(w, id, err)
		return
	}
	const message = "cancelled by the caller"
	run, err = f.Change(ctx, run, func(run *evalflow.Run) error {
		if err := run.Advance(evalflow.StatusCancelled, f.Now()); err != nil {
			return err
		}
		run.Message = message
		return nil
	}, evalflow.NoteCancelled, message)
	switch {
	case errors.Is(err, evalflow.ErrStale) && run.Status != evalflow.StatusCancelled:
		f.writeError(w, id, &evalflow.Error{Code: evalflow.CodeConflict, Field: "id", Message: "run has already " + string(run.Status)})
		return
	case errors.Is(err, evalflow.ErrStale): // cancelled again: tell the caller again
		err = f.Notify(ctx, run, evalflow.NoteCancelled, run.Message)
	}
	if err != nil {
		f.writeError(w, id, err)
		return
	}
	if err := f.Events.Send(ctx, *f.Next(evalflow.TypeCancelled, id)); err != nil {
		f.writeError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, RunView{Run: run, Steps: evalflow.Steps})
}

// APIError is the body of an error answer.
type APIError struct {
	Code    evalflow.Code `json:"code"`
	Field   string        `json:"field,omitempty"`
	Message string        `json:"message"`
}

func (f *Function) writeError(w http.ResponseWriter, runID string, err error) {
	status := evalflow.HTTPStatus(err)
	msg := err.Error()
	if status >= 500 {
		f.Log.Error("request failed", "run_id", runID, "error", err)
		msg = "internal error; see the start function's log"
	}
	writeJSON(w, status, map[string]APIError{"error": {Code: evalflow.ErrorCode(err), Field: evalflow.ErrorField(err), Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
