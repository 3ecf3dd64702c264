// Package localjob runs evaluation jobs as local processes: the local-mode stand-in for
// Kubernetes Jobs. A Server owns the jobs (create by name is exactly-once, as in the
// Jobs API: a second create is AlreadyExists); a Client is what deploy calls.
//
// A job gets a directory holding meta/job.json (the spec, as a Job mounts it) and
// secret/api_key and secret/report_key (mode 0600, as a Secret volume), removed as
// soon as the process ends.
// The runner's environment is scrubbed: no secret reaches its args or env.
//
// localjob.go is the server and its API; process.go runs a job's runner (its attempts,
// its end); adopt.go takes on the jobs an earlier server left (evalflow up killed or
// stopped mid-run); client.go is deploy's side.
package localjob

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// CreateRequest is the body of PUT /jobs/{name}.
type CreateRequest struct {
	Spec   evalflow.JobSpec `json:"spec"`
	APIKey string           `json:"api_key,omitempty"`
	// ReportKey signs the job's reports: the runner's, and its end as the server
	// reports it.
	ReportKey []byte `json:"report_key,omitempty"`
}

// Status is a job's state.
type Status struct {
	Name     string `json:"name"`
	Phase    string `json:"phase"` // Running, Succeeded, Failed
	ExitCode int    `json:"exit_code"`
	PID      int    `json:"pid"`
	Restarts int    `json:"restarts"`
}

// Server runs jobs. Configure its fields, then serve it over HTTP.
type Server struct {
	// RunnerPath is the runner binary: it is run as RunnerPath --job DIR/meta/job.json.
	RunnerPath string
	// Commands are the other engines' programs (engine name → path; lm-eval-adapter,
	// opencompass-adapter), run the same way. A job for an engine with none is
	// ErrNoProgram.
	Commands map[string]string
	// WorkDir holds one directory per job.
	WorkDir string
	// Events reports each job's end (evalflow.TypeJobFinished) to the broker.
	Events *cloudevent.Sender
	Log    *slog.Logger
	// Token, when set, is the bearer token every request must carry: only evalflow's
	// own processes (deploy) create and stop jobs.
	Token string
	// OutputRoot, when set, is the directory every job's output directory must lie
	// under: a job writes nowhere else.
	OutputRoot string
	// CallbackURL, when set, is where an adopted job now reports (the broker of the
	// server's evalflow, not the one of the evalflow that created the job).
	CallbackURL string

	mu      sync.Mutex
	jobs    map[string]*job
	created int
	wg      sync.WaitGroup
	// stopping is set by Shutdown: jobs stopped then are left to resume (Adopt).
	stopping bool
}

type job struct {
	status    Status
	cancel    context.CancelFunc
	done      chan struct{}
	reportKey []byte
}

// ServeHTTP serves PUT, GET and DELETE on /jobs/{name}.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.Token)) != 1 {
		http.Error(w, "a bearer token is required", http.StatusUnauthorized)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/jobs/")
	if !ok || name == "" || strings.ContainsAny(name, "/.") {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodPut:
		var req CreateRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Spec.ID != name {
			http.Error(w, "body: a job spec whose id is the job's name is required", http.StatusBadRequest)
			return
		}
		switch err := s.Create(req); {
		case errors.Is(err, errOutsideRoot):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case errors.Is(err, evalflow.ErrJobExists):
			http.Error(w, err.Error(), http.StatusConflict)
		case errors.Is(err, ErrNoProgram):
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusCreated)
		}
	case http.MethodGet:
		st, ok := s.Get(name)
		if !ok {
			http.Error(w, "no such job", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	case http.MethodDelete:
		s.Delete(name)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// ErrNoProgram is a job for an engine the server has no program for: creating it
// again cannot help (evalflow.ErrPermanent).
var ErrNoProgram = evalflow.Permanent(errors.New("no local program for the engine"))

// program is the program that runs engine's jobs, "" for none.
func (s *Server) program(engine string) string {
	if engine == "" || engine == evalflow.DefaultEngine {
		return s.RunnerPath
	}
	return s.Commands[engine]
}

// errOutsideRoot is a job whose output directory is not under the server's OutputRoot.
var errOutsideRoot = errors.New("output_dir is outside the jobs' output root")

// Create starts the job req describes, unless a job of that name exists.
func (s *Server) Create(req CreateRequest) error {
	spec := req.Spec
	if s.OutputRoot != "" {
		rel, err := filepath.Rel(s.OutputRoot, spec.OutputDir)
		if err != nil || !filepath.IsLocal(rel) {
			return fmt.Errorf("localjob: job %s: %w (%s)", spec.ID, errOutsideRoot, s.OutputRoot)
		}
	}
	if s.program(spec.Engine) == "" {
		return fmt.Errorf("localjob: job %s: %w %q (its adapter was not found beside evalflow or on PATH)", spec.ID, ErrNoProgram, spec.Engine)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobs == nil {
		s.jobs = map[string]*job{}
	}
	if _, ok := s.jobs[spec.ID]; ok {
		return evalflow.ErrJobExists
	}
	dir := filepath.Join(s.WorkDir, spec.ID)
	if err := os.MkdirAll(filepath.Join(dir, "meta"), 0o755); err != nil {
		return fmt.Errorf("localjob: create job %s: %w", spec.ID, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "secret"), 0o700); err != nil {
		return fmt.Errorf("localjob: create job %s: %w", spec.ID, err)
	}
	var err error
	if spec.APIKeyFile, err = writeSecret(dir, "api_key", []byte(req.APIKey)); err != nil {
		return fmt.Errorf("localjob: create job %s: %w", spec.ID, err)
	}
	if spec.ReportKeyFile, err = writeSecret(dir, "report_key", req.ReportKey); err != nil {
		return fmt.Errorf("localjob: create job %s: %w", spec.ID, err)
	}
	spec.EndReportedFile = filepath.Join(dir, "meta", "end-reported")
	specPath := filepath.Join(dir, "meta", "job.json")
	body, _ := json.MarshalIndent(spec, "", "  ")
	if err := os.WriteFile(specPath, body, 0o644); err != nil {
		return fmt.Errorf("localjob: create job %s: spec: %w", spec.ID, err)
	}
	if err := s.launch(spec, specPath, dir, req.ReportKey); err != nil {
		return err
	}
	s.created++
	return nil
}

// launch starts job spec (its directory dir made) and follows it. The caller holds
// s.mu.
func (s *Server) launch(spec evalflow.JobSpec, specPath, dir string, reportKey []byte) error {
	ctx, cancel := context.WithCancel(context.Background())
	if spec.DeadlineSeconds > 0 {
		ctx, cancel = deadline(ctx, cancel, time.Duration(spec.DeadlineSeconds)*time.Second)
	}
	j := &job{status: Status{Name: spec.ID, Phase: "Running"}, cancel: cancel, done: make(chan struct{}), reportKey: reportKey}
	cmd, logFile, err := s.start(ctx, j, spec, specPath, dir)
	if err != nil {
		cancel()
		return err
	}
	s.jobs[spec.ID] = j
	s.wg.Add(1)
	go s.follow(ctx, cmd, logFile, j, spec, specPath, dir)
	return nil
}

// writeSecret writes secret as the job's secret file name (as a Secret volume holds
// it) and returns its path; "" for no secret.
func writeSecret(dir, name string, secret []byte) (string, error) {
	if len(secret) == 0 {
		return "", nil
	}
	path := filepath.Join(dir, "secret", name)
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		return "", fmt.Errorf("secret %s: %w", name, err)
	}
	return path, nil
}

// Created counts the jobs the server has created (restarts of a job's runner are
// counted in its Status).
func (s *Server) Created() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// Running counts the jobs running now.
func (s *Server) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, j := range s.jobs {
		if j.status.Phase == "Running" {
			n++
		}
	}
	return n
}

// Get returns a job's status.
func (s *Server) Get(name string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[name]
	if !ok {
		return Status{}, false
	}
	return j.status, true
}

// Delete stops a running job (its end is still reported). Deleting a missing job is a no-op.
func (s *Server) Delete(name string) {
	s.mu.Lock()
	j, ok := s.jobs[name]
	s.mu.Unlock()
	if ok {
		j.cancel()
		<-j.done
	}
}

// Shutdown stops every job and waits for them. Their ends are not reported: each is
// left, secrets and checkpoint, for the next server on WorkDir to resume (Adopt).
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.stopping = true
	for _, j := range s.jobs {
		j.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}
