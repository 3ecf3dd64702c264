package evalflow

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Status is where a run is. Statuses are ranked: a run only ever moves one rank up
// (its next step), or ends (failed, cancelled) from any status that is not terminal.
type Status string

const (
	StatusPending   Status = "pending"   // recorded by start
	StatusVerifying Status = "verifying" // verify is checking the target
	StatusDeploying Status = "deploying" // deploy is creating the job
	StatusRunning   Status = "running"   // the job runs; watch follows it
	StatusStoring   Status = "storing"   // artifact is pushing the results
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

var statusRank = map[Status]int{
	StatusPending: 1, StatusVerifying: 2, StatusDeploying: 3, StatusRunning: 4,
	StatusStoring: 5, StatusSucceeded: 6, StatusFailed: 6, StatusCancelled: 6,
}

// Terminal reports whether nothing more happens to a run in status s.
func (s Status) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool { return statusRank[s] > 0 }

// ErrStale says a change would move a run backwards or out of a terminal status.
// Handlers treat it as "already done": a duplicate or late event.
var ErrStale = &Error{Code: CodeConflict, Message: "stale: the run has moved past this"}

// ErrOutOfTurn says a change would skip a step (pending to deploying, say). No step
// sends an event that does: it is forged or corrupt. It is ErrStale too, so a handler
// drops it, changing nothing, as it drops a late event.
var ErrOutOfTurn = fmt.Errorf("%w (out of turn: it would skip a step)", ErrStale)

// StepID names a pipeline step.
type StepID string

const (
	StepStart    StepID = "start"
	StepVerify   StepID = "verify"
	StepDeploy   StepID = "deploy"
	StepWatch    StepID = "job-watch"
	StepArtifact StepID = "artifact"
)

// StepInfo describes a step to callers.
type StepInfo struct {
	ID          StepID `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description"`
	// Status is the run status the step works in.
	Status Status `json:"-"`
}

// Steps are the pipeline's steps, in order.
var Steps = []StepInfo{
	{StepStart, "Start", "Validate the request and record the run", StatusPending},
	{StepVerify, "Verify", "Check the model endpoint (or cluster) is reachable and usable", StatusVerifying},
	{StepDeploy, "Deploy", "Create the evaluation job, exactly once", StatusDeploying},
	{StepWatch, "Job watch", "Follow the job and the runner's progress", StatusRunning},
	{StepArtifact, "Artifact", "Push the results as an OCI artifact", StatusStoring},
}

// StepFor returns the step that works while a run is in status s.
func StepFor(s Status) StepID {
	for _, st := range Steps {
		if st.Status == s {
			return st.ID
		}
	}
	return ""
}

// Progress is the runner's latest report.
type Progress struct {
	Phase      string    `json:"phase,omitempty"`
	Done       int       `json:"done"`
	Total      int       `json:"total"`
	Rate       float64   `json:"samples_per_second,omitempty"`
	ETASeconds float64   `json:"eta_seconds,omitempty"`
	Message    string    `json:"message,omitempty"`
	UpdatedAt  time.Time `json:"updated_at,omitempty"`
}

// Artifact is where the results were pushed.
type Artifact struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	MediaType string `json:"media_type,omitempty"`
}

// Summary is the headline of a run's results.
type Summary struct {
	// Scores maps a task (or group) to its primary metric.
	Scores  map[string]float64 `json:"scores"`
	Samples int                `json:"samples"`
	// Metric names the primary metric of the first task, e.g. "exact_match";
	// Metrics names each task's.
	Metric  string            `json:"metric,omitempty"`
	Metrics map[string]string `json:"metrics,omitempty"`
	// Errors counts samples that failed after retries (within options.max_error_rate)
	// and are left out of the scores.
	Errors int `json:"errors,omitempty"`
	// Concurrency is how many requests the engine kept in flight: the run's, or the
	// level it sized to the endpoint when the run named none.
	Concurrency int   `json:"concurrency,omitempty"`
	Usage       Usage `json:"usage"`
	// Cost prices Usage with the options' costs per 1K tokens (0 without them).
	Cost float64 `json:"cost,omitempty"`
}

// Usage counts tokens, from the endpoint's usage fields.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// Run is one evaluation, as stored and as shown to callers. Secrets are never part of
// it: they are sealed and kept apart (runstore).
type Run struct {
	ID           string          `json:"id"`
	ModelName    string          `json:"model_name"`
	BaseURL      string          `json:"base_url"`
	Datasets     []DatasetSpec   `json:"datasets"`
	Concurrency  int             `json:"concurrency,omitempty"`
	Options      *RunOptions     `json:"options,omitempty"`
	Engine       string          `json:"engine"`
	EngineConfig json.RawMessage `json:"engine_config,omitempty"`
	Source       string          `json:"source,omitempty"`
	SourceTopic  string          `json:"source_topic,omitempty"`
	// Caller is who asked for the run (the caller of its token): only that caller,
	// and an operator, see it.
	Caller string `json:"caller,omitempty"`
	// Target is where the run's job runs; OwnCluster, for a Kubernetes Job, that it
	// runs in evalflow's own cluster rather than the one of the run's kubeconfig.
	Target     Target    `json:"target"`
	OwnCluster bool      `json:"own_cluster,omitempty"`
	Status     Status    `json:"status"`
	Step       StepID    `json:"step"`
	Message    string    `json:"message,omitempty"`
	Progress   Progress  `json:"progress"`
	ETA        time.Time `json:"eta,omitempty"`
	Job        string    `json:"job,omitempty"`
	// Queued says the run waits for one of the deployment's job slots
	// (EVALFLOW_MAX_JOBS); QueuePosition is its place in line (1: next), as the API
	// shows it.
	Queued        bool      `json:"queued,omitempty"`
	QueuePosition int       `json:"queue_position,omitempty"`
	Summary       *Summary  `json:"summary,omitempty"`
	Artifact      *Artifact `json:"artifact,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	EndedAt       time.Time `json:"ended_at,omitempty"`
	// Revision names the stored version this run was read at (runstore sets it): an
	// update from it applies only if nothing changed the run since. Never shown.
	Revision string `json:"-"`
}

// Target is where a run's job runs.
type Target string

const (
	// TargetLocal is a local process (local mode, a run without a kubeconfig).
	TargetLocal Target = "local"
	// TargetKubernetes is a Kubernetes Job: in the cluster of the run's kubeconfig,
	// or, for a run without one in a deployment that has a cluster of its own
	// (EVALFLOW_OWN_CLUSTER), in evalflow's own (Run.OwnCluster).
	TargetKubernetes Target = "kubernetes"
)

// OnKubernetes reports whether r's job is a Kubernetes Job (in its own cluster or
// evalflow's): it pushes its results itself, and job-watch reads its state.
func (r *Run) OnKubernetes() bool { return r.Target == TargetKubernetes }

// RunsCode says whether any of r's datasets is scored by running the model's code.
func (r *Run) RunsCode() bool { return slices.ContainsFunc(r.Datasets, DatasetSpec.RunsCode) }

// InOwnCluster has run r's job run in evalflow's own cluster.
func (r *Run) InOwnCluster() { r.Target, r.OwnCluster = TargetKubernetes, true }

// NewRun makes the run a valid request describes, at time now.
func NewRun(req Request, now time.Time) *Run {
	target := TargetLocal
	if req.Kubeconfig != "" {
		target = TargetKubernetes
	}
	r := &Run{
		ID: req.EvalRequestID, ModelName: req.ModelName, BaseURL: req.BaseURL,
		Datasets: req.Datasets, Concurrency: req.Concurrency, Options: req.Options,
		Engine: cmp.Or(req.Engine, DefaultEngine), EngineConfig: req.EngineConfig,
		Source: req.Source, SourceTopic: req.SourceTopic, Target: target,
		Status: StatusPending, Step: StepStart, CreatedAt: now, UpdatedAt: now,
	}
	r.Progress.Total = r.Samples()
	r.ETA = now.Add(EstimateDuration(r.Progress.Total, r.Concurrency))
	return r
}

// DifferingField names the first field in which req asks for another evaluation than
// the run its eval_request_id already names ("" when it asks for the same). The
// secrets (api_key, kubeconfig) are not in a Run: whoever holds them compares them.
func (r *Run) DifferingField(req Request) string {
	again := NewRun(req, r.CreatedAt)
	for _, f := range []struct {
		name string
		was  any
		now  any
	}{
		{"model_name", r.ModelName, again.ModelName},
		{"base_url", r.BaseURL, again.BaseURL},
		{"datasets", r.Datasets, again.Datasets},
		{"concurrency", r.Concurrency, again.Concurrency},
		{"options", r.Options, again.Options},
		{"engine", r.Engine, again.Engine},
		{"engine_config", canonical(r.EngineConfig), canonical(again.EngineConfig)},
		{"source", r.Source, again.Source},
		{"source_topic", r.SourceTopic, again.SourceTopic},
	} {
		was, _ := json.Marshal(f.was)
		now, _ := json.Marshal(f.now)
		if !bytes.Equal(was, now) {
			return f.name
		}
	}
	return ""
}

// canonical is raw JSON as a value, so that spacing and key order do not count.
func canonical(raw json.RawMessage) any {
	var v any
	if len(raw) > 0 && json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	return v
}

// Samples estimates the samples the run scores.
func (r *Run) Samples() int {
	n := 0
	for _, d := range r.Datasets {
		n += d.SampleCount()
	}
	return n
}

// EstimateDuration is a first guess of a run's length before the runner reports:
// a fixed overhead plus a conservative per-sample time.
func EstimateDuration(samples, concurrency int) time.Duration {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	perSample := 400 * time.Millisecond / time.Duration(min(concurrency, 8))
	return 10*time.Second + time.Duration(samples)*perSample
}

// DefaultConcurrency is the concurrency estimates assume when a run names none (the
// runner then sizes it to the endpoint).
const DefaultConcurrency = 8

// Advance moves the run to status to, at time now. It returns ErrStale when to is not
// ahead of the current status (a duplicate or late event) or the run has ended, and
// ErrOutOfTurn when to is further ahead than the next step (only failed and cancelled
// may be reached from anywhere).
func (r *Run) Advance(to Status, now time.Time) error {
	if !to.Valid() {
		return fmt.Errorf("advance run %s: unknown status %q", r.ID, to)
	}
	if r.Status.Terminal() || statusRank[to] <= statusRank[r.Status] {
		return ErrStale
	}
	if statusRank[to] > statusRank[r.Status]+1 && to != StatusFailed && to != StatusCancelled {
		return ErrOutOfTurn
	}
	r.Status = to
	if step := StepFor(to); step != "" {
		r.Step = step
	}
	r.UpdatedAt = now
	if to.Terminal() {
		r.EndedAt = now
		r.ETA = time.Time{}
		r.Progress.ETASeconds = 0
	}
	return nil
}

// Fail ends the run as failed with message (which must carry no secret).
func (r *Run) Fail(message string, now time.Time) error {
	if err := r.Advance(StatusFailed, now); err != nil {
		return err
	}
	r.Message = message
	return nil
}

// Report applies a runner progress report. Reports arrive in any order: one that is not
// newer (more samples done, or a later time at the same count) is ErrStale.
func (r *Run) Report(p Progress, now time.Time) error {
	if r.Status != StatusRunning {
		return ErrStale
	}
	if p.Done < r.Progress.Done || (p.Done == r.Progress.Done && !p.UpdatedAt.After(r.Progress.UpdatedAt)) {
		return ErrStale
	}
	r.Progress = p
	if p.ETASeconds > 0 || p.Done == p.Total {
		r.ETA = now.Add(time.Duration(p.ETASeconds * float64(time.Second)))
	}
	r.UpdatedAt = now
	return nil
}

// Stalled says what run r waits for when it has not moved for a while: the event
// that moves it on (resend: "" when none does), and what it waits on, for a message
// ("" when it may wait however long). A run whose job is under way waits on nothing
// (job-watch follows the job), unless it has no job at all; a queued run waits its
// turn, and the event that admits it is sent again in case one was lost.
func (r *Run) Stalled() (resend EventType, waiting string) {
	switch {
	case r.Status == StatusPending || r.Status == StatusVerifying:
		return TypeStarted, "verify"
	case r.Status == StatusDeploying && r.Queued: // waits its turn, however long
		return TypeVerified, ""
	case r.Status == StatusDeploying:
		return TypeVerified, "deploy to create the job"
	case r.Status == StatusRunning && r.Summary != nil, r.Status == StatusStoring:
		return TypeResultsReady, "the artifact step"
	case r.Status == StatusRunning && r.Job == "":
		return "", "a job (the run is running without one)"
	}
	return "", ""
}
