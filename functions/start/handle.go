// Package function is evalflow's start step, an HTTP function: it validates a request,
// records the run in Redis (once per eval_request_id) and emits the first event
// (handle.go; the request read in request.go). It also serves the runs API (runs.go:
// GET /evals/{id}, GET /evals/{id}/events (its timeline), GET /evals, DELETE
// /evals/{id}, GET /deadletters) and the results API (results.go).
package function

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/artifacts"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/engines"
	"github.com/evalflow/evalflow/shared/engines/configschema"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/runstore"
	"github.com/evalflow/evalflow/shared/tracing"
)

// Function is the start step.
type Function struct {
	*pipeline.Env // the store, the sender, the logger; Stop and Ready
	cfg           Config
	tokens        *auth.Tokens // nil: no tokens file, every request is the operator's
	mux           *http.ServeMux
	engines       *configschema.Checker
	artifacts     *artifacts.Reader // nil: no results store configured
}

// New returns the function; Start connects it.
func New() *Function { return &Function{} }

// Start connects to Redis and the broker, configured by cfg (the environment).
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := pipeline.Load(ctx, cfg, &f.cfg); err != nil {
		return fmt.Errorf("start: config: %w", err)
	}
	if f.cfg.TokensFile != "" {
		tokens, err := auth.Open(f.cfg.TokensFile)
		if err != nil {
			return fmt.Errorf("start: config EVALFLOW_TOKENS_FILE: %w", err)
		}
		f.tokens = tokens
	}
	if f.cfg.OCI.Layout != "" || f.cfg.OCI.Registry != "" {
		reader, err := artifacts.Open(f.cfg.OCI, f.cfg.KeepResults)
		if err != nil {
			return fmt.Errorf("start: results store: %w", err)
		}
		f.artifacts = reader
	}
	checker, err := configschema.New(engines.Default())
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	f.engines = checker
	env, err := pipeline.Open(ctx, evalflow.StepStart, cfg)
	if err != nil {
		return err
	}
	f.Env = env
	if f.tokens == nil {
		f.Log.Warn("no EVALFLOW_TOKENS_FILE: every request is taken as the operator's")
	}
	f.mux = http.NewServeMux()
	f.mux.Handle("GET /metrics", f.Metrics.Handler()) // no token: Prometheus scrapes it
	f.mux.HandleFunc("POST /evals/start", f.authenticated(false, f.start))
	f.mux.HandleFunc("POST /{$}", f.authenticated(true, f.start)) // CloudEvents delivered by a Trigger
	f.mux.HandleFunc("GET /evals/{id}", f.authenticated(false, f.get))
	f.mux.HandleFunc("GET /evals/{id}/events", f.authenticated(false, f.timeline))
	f.mux.HandleFunc("GET /evals", f.authenticated(false, f.list))
	f.mux.HandleFunc("GET /deadletters", f.authenticated(false, f.deadLetters))
	f.mux.HandleFunc("DELETE /evals/{id}", f.authenticated(false, f.cancel))
	f.mux.HandleFunc("GET /evals/{id}/results", f.authenticated(false, f.results))
	f.mux.HandleFunc("GET /evals/{id}/samples", f.authenticated(false, f.samples))
	f.mux.HandleFunc("GET /evals/{id}/results.json", f.authenticated(false, f.file(evalflow.ResultsFile, "application/json")))
	f.mux.HandleFunc("GET /evals/{id}/samples.jsonl", f.authenticated(false, f.file(evalflow.SamplesFile, "application/jsonl")))
	f.mux.HandleFunc("GET /compare", f.authenticated(false, f.compare))
	f.mux.HandleFunc("GET /tasks", f.authenticated(false, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, evalflow.TaskCatalogue())
	}))
	f.mux.HandleFunc("GET /ui/", f.page()) // the page; its data comes from the API above
	f.mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	return nil
}

// Handle serves the API, counting requests by route and answer.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	_, route := f.mux.Handler(r)
	// A run's trace begins here (or goes on from the caller's traceparent).
	ctx, span := tracing.Start(tracing.FromRequest(r), "start "+route, "")
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	f.mux.ServeHTTP(rec, r.WithContext(ctx))
	tracing.End(span, nil)
	f.Metrics.Requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
}

// statusRecorder keeps the status code a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Started is the answer to a start request.
type Started struct {
	RunID      string              `json:"run_id"`
	Created    bool                `json:"created"`
	Status     evalflow.Status     `json:"status"`
	ETASeconds float64             `json:"eta_seconds"`
	Steps      []evalflow.StepInfo `json:"steps"`
	Run        *evalflow.Run       `json:"run"`
}

func (f *Function) start(w http.ResponseWriter, r *http.Request) {
	req, source, err := readRequest(w, r)
	if err == nil {
		err = f.engines.Validate(&req)
	}
	if err == nil {
		if refused := f.Network.CheckURL(req.BaseURL); refused != nil {
			err = &evalflow.Error{Code: evalflow.CodeInvalid, Field: "base_url", Message: refused.Error()}
		}
	}
	if err != nil {
		f.writeError(w, "", err)
		return
	}
	who := callerOf(r.Context())
	if who.delivery { // the broker's delivery: the event's source names the caller
		who.name = source
	}
	run, created, err := f.record(r.Context(), req, who)
	if err != nil {
		f.writeError(w, req.EvalRequestID, err)
		return
	}
	status := http.StatusAccepted
	if !created {
		status = http.StatusOK
	}
	if r.URL.Path == "/" { // a Trigger's delivery: its reply is a CloudEvent or nothing
		w.WriteHeader(status)
		return
	}
	eta := run.ETA.Sub(f.Now()).Seconds()
	writeJSON(w, status, Started{RunID: run.ID, Created: created, Status: run.Status,
		ETASeconds: max(eta, 0), Steps: evalflow.Steps, Run: run})
}

// record stores the run once and emits run.started while the run is pending (again on
// a retried request: verify drops the copy).
func (f *Function) record(ctx context.Context, req evalflow.Request, who caller) (*evalflow.Run, bool, error) {
	run := evalflow.NewRun(req, f.Now())
	run.Caller = who.name
	if run.Target == evalflow.TargetLocal && f.OwnCluster() { // a cluster deployment: its Job runs there
		run.InOwnCluster()
	}
	// The run is recorded with the first entry of its timeline, in one write.
	run, created, err := f.Store.Create(ctx, run, secretsOf(req), runstore.Recording(func(r *evalflow.Run) evalflow.TimelineEntry {
		_, entry := f.Note(r, evalflow.NoteSucceeded, "run recorded")
		return entry
	}))
	if err != nil {
		return nil, false, err
	}
	if !created && !who.sees(run) { // another caller's: nothing of it is shown
		return nil, false, &evalflow.Error{Code: evalflow.CodeConflict, Field: "eval_request_id", Message: "already used; choose another"}
	}
	if !created {
		if err := f.sameRequest(ctx, run, req); err != nil {
			return nil, false, err
		}
	}
	if created {
		f.Log.Info("run recorded", "run_id", run.ID, "model", run.ModelName, "target", run.Target)
	}
	if run.Status == evalflow.StatusPending {
		// In flight: job-watch's tick drives it if an event is lost.
		if err := f.KeepTicking(ctx); err != nil {
			return nil, false, fmt.Errorf("start: run %s: %w", run.ID, err)
		}
		note, _ := f.Note(run, evalflow.NoteSucceeded, "run recorded")
		if err := f.Events.Send(ctx, note); err != nil {
			return nil, false, fmt.Errorf("start: notify run %s: %w", run.ID, err)
		}
		if err := f.Events.Send(ctx, *f.Next(evalflow.TypeStarted, run.ID)); err != nil {
			return nil, false, err
		}
	}
	return run, created, nil
}

// secretsOf is what of req is sealed apart from its run.
func secretsOf(req evalflow.Request) map[string]string {
	return map[string]string{runstore.SecretAPIKey: req.APIKey, runstore.SecretKubeconfig: req.Kubeconfig}
}

// sameRequest refuses to reuse an eval_request_id for a different evaluation, naming
// the first field that differs (a secret is compared by its digest, never shown).
func (f *Function) sameRequest(ctx context.Context, run *evalflow.Run, req evalflow.Request) error {
	field := run.DifferingField(req)
	if field == "" {
		var err error
		if field, err = f.Store.DifferingSecret(ctx, run.ID, secretsOf(req)); err != nil {
			return err
		}
	}
	if field == "" {
		return nil
	}
	return &evalflow.Error{Code: evalflow.CodeConflict, Field: field,
		Message: "differs from the run eval_request_id " + run.ID + " already names; a different evaluation needs a new eval_request_id"}
}
