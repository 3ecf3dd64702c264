package localjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/tracing"
)

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
	// lm_eval), as deleting a Job's pod does. A runner whose server dies (killed
	// outright) is killed too, not left running where nothing hears it; the next
	// server adopts its job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
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
	_ = os.WriteFile(filepath.Join(dir, "meta", "pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600) // for Adopt
	s.log().Info("job started", "job", spec.ID, "run_id", spec.RunID, "pid", cmd.Process.Pid, "attempt", j.status.Restarts+1)
	return cmd, logFile, nil
}

// follow waits for each attempt of a job, starts a failed one again up to
// BackoffLimit times, then records the end, reports it, removes the secrets and, after
// the TTL, removes the job. A job stopped by Shutdown is left as it is, for the next
// server to adopt.
func (s *Server) follow(ctx context.Context, cmd *exec.Cmd, logFile *os.File, j *job, spec evalflow.JobSpec, specPath, dir string) {
	defer s.wg.Done()
	cmd, err := s.restartUntilDone(ctx, cmd, logFile, j, spec, specPath, dir)
	cause := ctx.Err() // nil: the runner exited by itself
	j.cancel()
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if stopping && errors.Is(cause, context.Canceled) {
		s.log().Info("job stopped with the server; the next one resumes it", "job", spec.ID, "run_id", spec.RunID)
		close(j.done)
		return
	}

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
	s.end(spec, fin, dir, j.reportKey)
}

// end records job spec's end in its directory (for a server that adopts it, should
// this one die before the end is told), reports it unless the runner told it already,
// then removes the job's secrets and, after its TTL, the job.
func (s *Server) end(spec evalflow.JobSpec, fin evalflow.JobFinished, dir string, reportKey []byte) {
	b, _ := json.Marshal(fin)
	_ = os.WriteFile(filepath.Join(dir, "meta", "ended"), b, 0o600)
	if _, err := os.Stat(spec.EndReportedFile); err == nil && fin.Succeeded { // told already by the runner
		_ = os.RemoveAll(filepath.Join(dir, "secret")) // at once: the runner's report may end the run already
	} else {
		s.reportEnd(spec, fin, map[bool]string{true: "Succeeded", false: "Failed"}[fin.Succeeded], reportKey)
	}
	_ = os.RemoveAll(filepath.Join(dir, "secret"))
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
