// Package localjob runs evaluation jobs as local processes: the local-mode stand-in for
// Kubernetes Jobs. A Server owns the jobs (create by name is exactly-once, as in the
// Jobs API: a second create is AlreadyExists); a Client is what deploy calls.
//
// A job gets a directory holding meta/job.json (the spec, as a Job mounts it) and
// secret/api_key and secret/report_key (mode 0600, as a Secret volume), removed as
// soon as the process ends.
// The runner's environment is scrubbed: no secret reaches its args or env.
package localjob

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/tracing"
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

	mu      sync.Mutex
	jobs    map[string]*job
	created int
	wg      sync.WaitGroup
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
	ctx, cancel := context.WithCancel(context.Background())
	if spec.DeadlineSeconds > 0 {
		ctx, cancel = deadline(ctx, cancel, time.Duration(spec.DeadlineSeconds)*time.Second)
	}
	j := &job{status: Status{Name: spec.ID, Phase: "Running"}, cancel: cancel, done: make(chan struct{}), reportKey: req.ReportKey}
	cmd, logFile, err := s.start(ctx, j, spec, specPath, dir)
	if err != nil {
		cancel()
		return err
	}
	s.jobs[spec.ID] = j
	s.created++
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

// BackoffLimit is how many times a failed runner is started again (a Job's
// backoffLimit); each attempt resumes from the checkpoint the last one left.
const BackoffLimit = 2

// start runs one attempt of the job. The caller holds s.mu.
func (s *Server) start(ctx context.Context, j *job, spec evalflow.JobSpec, specPath, dir string) (*exec.Cmd, *os.File, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, "runner.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("localjob: job %s: log: %w", spec.ID, err)
	}
	cmd := exec.CommandContext(ctx, s.program(spec.Engine), "--job", specPath)
	// The job is a process group: stopping it stops what it started too (an adapter's
	// lm_eval), as deleting a Job's pod does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Dir = dir
	cmd.Env = scrubbedEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, fmt.Errorf("localjob: start job %s: %w", spec.ID, err)
	}
	j.status.PID = cmd.Process.Pid
	s.log().Info("job started", "job", spec.ID, "run_id", spec.RunID, "pid", cmd.Process.Pid, "attempt", j.status.Restarts+1)
	return cmd, logFile, nil
}

// follow waits for each attempt of a job, starts a failed one again up to
// BackoffLimit times, then removes the secret, reports the end and, after the TTL,
// removes the job.
func (s *Server) follow(ctx context.Context, cmd *exec.Cmd, logFile *os.File, j *job, spec evalflow.JobSpec, specPath, dir string) {
	defer s.wg.Done()
	cmd, err := s.restartUntilDone(ctx, cmd, logFile, j, spec, specPath, dir)
	cause := ctx.Err() // nil: the runner exited by itself
	j.cancel()
	_ = os.RemoveAll(filepath.Join(dir, "secret"))

	fin := evalflow.JobFinished{RunID: spec.RunID, Job: spec.ID, Succeeded: err == nil}
	if cmd.ProcessState != nil {
		fin.ExitCode = cmd.ProcessState.ExitCode()
	}
	switch {
	case errors.Is(cause, context.DeadlineExceeded):
		fin.Message = fmt.Sprintf("job exceeded its deadline of %ds", spec.DeadlineSeconds)
	case errors.Is(cause, context.Canceled):
		fin.Succeeded, fin.Message = false, "job stopped"
	case err != nil:
		fin.Message = fmt.Sprintf("runner failed %d times; last exit code %d: %s", j.status.Restarts+1, fin.ExitCode, lastLine(filepath.Join(dir, "runner.log")))
	}
	s.mu.Lock()
	j.status.ExitCode = fin.ExitCode
	j.status.Phase = map[bool]string{true: "Succeeded", false: "Failed"}[fin.Succeeded]
	s.mu.Unlock()
	close(j.done)
	s.log().Info("job ended", "job", spec.ID, "run_id", spec.RunID, "phase", j.status.Phase, "exit_code", fin.ExitCode)
	if _, err := os.Stat(spec.EndReportedFile); err != nil || !fin.Succeeded { // not told already by the runner
		s.reportEnd(spec, fin, j.status.Phase, j.reportKey)
	}
	s.expire(spec, dir)
}

// restartUntilDone waits for the runner and starts it again after a failure, as a
// Job's backoff does, until it succeeds, fails for good (ExitPermanent), is stopped,
// or has failed BackoffLimit+1 times. It returns the last command and its error.
func (s *Server) restartUntilDone(ctx context.Context, cmd *exec.Cmd, logFile *os.File, j *job, spec evalflow.JobSpec, specPath, dir string) (*exec.Cmd, error) {
	for {
		err := cmd.Wait()
		logFile.Close()
		permanent := cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == evalflow.ExitPermanent
		if err == nil || ctx.Err() != nil || permanent || j.status.Restarts >= BackoffLimit {
			return cmd, err
		}
		s.mu.Lock()
		j.status.Restarts++
		s.log().Warn("runner failed; starting it again", "job", spec.ID, "run_id", spec.RunID, "error", err, "restarts", j.status.Restarts)
		next, nextLog, startErr := s.start(ctx, j, spec, specPath, dir)
		s.mu.Unlock()
		if startErr != nil {
			return cmd, startErr // the last attempt's exit stands
		}
		cmd, logFile = next, nextLog
	}
}

// reportEnd sends job.finished, signed with the job's report key, as a Job's watcher
// would see it end.
func (s *Server) reportEnd(spec evalflow.JobSpec, fin evalflow.JobFinished, phase string, key []byte) {
	if s.Events == nil {
		return
	}
	ev := cloudevent.New(evalflow.StepDeploy, evalflow.TypeJobFinished, spec.RunID, fin, phase)
	ev.SetSource("/evalflow/localjob")
	cloudevent.Sign(&ev, key)
	// In the run's trace, as the job's own reports.
	sendCtx, cancel := context.WithTimeout(tracing.Extract(context.Background(), spec.TraceParent, ""), time.Minute)
	defer cancel()
	if err := s.Events.Send(sendCtx, ev); err != nil {
		s.log().Error("report job end", "job", spec.ID, "run_id", spec.RunID, "error", err)
	}
}

// expire forgets a finished job and removes its directory after its TTL.
func (s *Server) expire(spec evalflow.JobSpec, dir string) {
	if spec.TTLSecondsAfterFinished <= 0 {
		return
	}
	time.AfterFunc(time.Duration(spec.TTLSecondsAfterFinished)*time.Second, func() {
		s.mu.Lock()
		delete(s.jobs, spec.ID)
		s.mu.Unlock()
		_ = os.RemoveAll(dir)
	})
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

// Shutdown stops every job and waits for them.
func (s *Server) Shutdown() {
	s.mu.Lock()
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

// deadline bounds ctx, returning a cancel that releases both contexts.
func deadline(ctx context.Context, cancel context.CancelFunc, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancelTimeout := context.WithTimeout(ctx, d)
	return ctx, func() { cancelTimeout(); cancel() }
}

// scrubbedEnv is the runner's environment: enough to run, nothing secret.
func scrubbedEnv() []string {
	var env []string
	// LM_EVAL, OPENCOMPASS and HF_HOME tell the adapters where their engine and its
	// downloads are.
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "LANG", "TZ", "GOCOVERDIR", "LM_EVAL", "OPENCOMPASS", "HF_HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	line := lines[len(lines)-1]
	if len(line) > 500 {
		line = line[len(line)-500:]
	}
	return line
}

// Client calls a Server.
type Client struct {
	URL   string
	Token string // the server's Token
	HTTP  *http.Client
}

// Create creates the job; evalflow.ErrJobExists when it exists.
func (c *Client) Create(ctx context.Context, spec evalflow.JobSpec, secrets evalflow.JobSecrets) error {
	body, _ := json.Marshal(CreateRequest{Spec: spec, APIKey: secrets.APIKey, ReportKey: secrets.ReportKey})
	resp, err := c.do(ctx, http.MethodPut, spec.ID, body)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		return nil
	case http.StatusConflict:
		return evalflow.ErrJobExists
	case http.StatusUnprocessableEntity:
		return fmt.Errorf("%w: engine %q", ErrNoProgram, spec.Engine)
	}
	return fmt.Errorf("localjob: create job %s: %s", spec.ID, resp.Status)
}

// Delete stops and removes the job.
func (c *Client) Delete(ctx context.Context, name string) error {
	resp, err := c.do(ctx, http.MethodDelete, name, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("localjob: delete job %s: %s", name, resp.Status)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, name string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+"/jobs/"+name, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("localjob: %s job %s: %w", method, name, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("localjob: %s job %s: %w", method, name, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}
