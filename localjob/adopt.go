package localjob

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
)

// Adopt takes on the jobs an earlier server on WorkDir left: killed outright, or
// stopped by Shutdown. A job that had not ended is started again (its runner resumes
// from its checkpoint), once a runner of it still alive is stopped; one whose end was
// recorded is reported again (at least once) and its secrets removed; one that can
// be neither, its report key gone, is removed. It returns how many jobs it started.
func (s *Server) Adopt() (int, error) {
	dirs, err := os.ReadDir(s.WorkDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("localjob: adopt: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobs == nil {
		s.jobs = map[string]*job{}
	}
	started := 0
	for _, d := range dirs {
		dir := filepath.Join(s.WorkDir, d.Name())
		specPath := filepath.Join(dir, "meta", "job.json")
		var spec evalflow.JobSpec
		b, err := os.ReadFile(specPath)
		if err != nil || json.Unmarshal(b, &spec) != nil || spec.ID != d.Name() || s.jobs[spec.ID] != nil {
			continue // not a job, or one this server has
		}
		stopOrphan(dir, specPath)
		key, _ := os.ReadFile(filepath.Join(dir, "secret", "report_key"))
		if ended, err := os.ReadFile(filepath.Join(dir, "meta", "ended")); err == nil {
			var fin evalflow.JobFinished
			if json.Unmarshal(ended, &fin) == nil && len(key) > 0 {
				s.end(spec, fin, dir, key)
			}
			_ = os.RemoveAll(filepath.Join(dir, "secret"))
			continue
		}
		if len(key) == 0 { // nothing can sign its end, nor a runner's reports
			s.log().Error("a job left without its report key removed", "job", spec.ID, "run_id", spec.RunID)
			_ = os.RemoveAll(dir)
			continue
		}
		if s.CallbackURL != "" && spec.CallbackURL != "" {
			spec.CallbackURL = s.CallbackURL
			body, _ := json.MarshalIndent(spec, "", "  ")
			if err := os.WriteFile(specPath, body, 0o644); err != nil {
				return started, fmt.Errorf("localjob: adopt job %s: spec: %w", spec.ID, err)
			}
		}
		if err := s.launch(spec, specPath, dir, key); err != nil {
			return started, err
		}
		s.log().Info("job adopted: started again, resuming from its checkpoint", "job", spec.ID, "run_id", spec.RunID)
		started++
	}
	return started, nil
}

// stopOrphan kills the process group of the runner of job dir that an earlier server
// left running (if its process is that runner still: its command line names specPath),
// and waits for it to go.
func stopOrphan(dir, specPath string) {
	b, err := os.ReadFile(filepath.Join(dir, "meta", "pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	running := func() bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && bytes.Contains(cmdline, []byte(specPath))
	}
	if !running() {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); running() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}
