// Package sandbox runs a model's code where it can do no harm: never in evalflow's own
// processes. Locally, each program is a python3 process (Debian's) under bubblewrap:
// its own user, network (loopback only, nothing listening), PID, IPC and UTS
// namespaces; a read-only /usr, its program read-only in /sandbox, a private empty
// /tmp, no other file; no environment; an unprivileged user (65534 where evalflow runs
// as root); limits on CPU time, address space, processes and file size set before the
// program's first line runs; and a wall-time kill of its whole process group.
//
// On Kubernetes, the programs of a batch go to a pod of their own (the kube adapter
// makes it), whose evalflow-sandbox runs each as python3 with the same limits, the pod
// itself being the walls: Batch and Line are what the two say to each other.
package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Limits bound one program.
type Limits struct {
	Wall      time.Duration // killed after this long
	CPU       time.Duration // RLIMIT_CPU
	Memory    int64         // RLIMIT_AS, bytes
	Processes int           // RLIMIT_NPROC
	FileSize  int64         // RLIMIT_FSIZE, bytes
}

// DefaultLimits are lm-eval's (HF code_eval's) 3 s a program, and bounds no honest
// HumanEval solution comes near.
var DefaultLimits = Limits{Wall: 3 * time.Second, CPU: 3 * time.Second, Memory: 512 << 20, Processes: 32, FileSize: 1 << 20}

// Result is what became of one program.
type Result struct {
	Passed  bool
	Outcome string // "passed", "failed: <its last error line>", "timed out after 3s", "killed: <signal>"
}

// Local runs programs as python3 processes under bubblewrap on this machine, or bare
// where the walls are already built (Bare, in the sandbox pod).
type Local struct {
	python, bwrap string // bwrap "": bare
	limits        Limits
	slots         chan struct{} // programs at once
}

// Bare runs programs as python3 processes with the limits but no bubblewrap: for the
// sandbox pod (no network, no token, read-only root, not root), never elsewhere.
func Bare(python string, limits Limits, parallel int) *Local {
	return &Local{python: python, limits: limits, slots: make(chan struct{}, max(1, parallel))}
}

// ErrUnavailable is a sandbox that cannot run here: what to install or allow.
var ErrUnavailable = errors.New("no sandbox for the model's code")

// NewLocal finds Debian's python3 and bubblewrap and runs a program to see that the
// sandbox works here (user namespaces allowed); else an error saying what is missing,
// before any sample is spent. parallel programs run at once.
func NewLocal(limits Limits, parallel int) (*Local, error) {
	python, bwrap := "/usr/bin/python3", ""
	if _, err := os.Stat(python); err != nil {
		return nil, fmt.Errorf("%w: %s is absent: install Debian's python3 (apt-get install python3)", ErrUnavailable, python)
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		return nil, fmt.Errorf("%w: bwrap is absent: install bubblewrap (apt-get install bubblewrap)", ErrUnavailable)
	}
	s := &Local{python: python, bwrap: bwrap, limits: limits, slots: make(chan struct{}, max(1, parallel))}
	if r, err := s.Run(context.Background(), "print('ok')"); err != nil || !r.Passed {
		return nil, fmt.Errorf("%w: a program as simple as print('ok') did not run (%s%v): bubblewrap needs user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)", ErrUnavailable, r.Outcome, err)
	}
	return s, nil
}

// harness sets the limits before the program's first line, then runs it as __main__.
const harness = `import resource, runpy, sys
for r, v in ((resource.RLIMIT_CPU, %d), (resource.RLIMIT_AS, %d), (resource.RLIMIT_NPROC, %d), (resource.RLIMIT_FSIZE, %d)):
    resource.setrlimit(r, (v, v))
sys.argv = ["program.py"]
runpy.run_path("program.py", run_name="__main__")
`

// Run runs program, waiting for a slot: what became of it; an error is evalflow's
// (the program did not run), never the program's.
func (s *Local) Run(ctx context.Context, program string) (Result, error) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return Result{}, fmt.Errorf("sandbox: %w", ctx.Err())
	}
	dir, err := os.MkdirTemp("", "evalflow-sandbox-")
	if err != nil {
		return Result{}, fmt.Errorf("sandbox: %w", err)
	}
	defer os.RemoveAll(dir)
	h := fmt.Sprintf(harness, int(s.limits.CPU.Seconds()), s.limits.Memory, s.limits.Processes, s.limits.FileSize)
	for name, body := range map[string]string{"program.py": program, "harness.py": h} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return Result{}, fmt.Errorf("sandbox: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil { // readable by the sandbox's user
		return Result{}, fmt.Errorf("sandbox: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.limits.Wall)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.python, "-I", "-S", "harness.py")
	cmd.Dir = dir
	if s.bwrap != "" {
		cmd = exec.CommandContext(ctx, s.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
			"--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
			"--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
			"--ro-bind", dir, "/sandbox", "--chdir", "/sandbox", "--clearenv",
			s.python, "-I", "-S", "harness.py")
	}
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 { // root's processes are not bounded by RLIMIT_NPROC: run as nobody
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = nil, &limited{&stderr, 64 << 10}
	err = cmd.Run()
	return outcome(ctx, err, stderr.String(), s.limits.Wall)
}

// outcome reads a finished program's end; an error is a program that did not start.
func outcome(ctx context.Context, err error, stderr string, wall time.Duration) (Result, error) {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return Result{Passed: true, Outcome: "passed"}, nil
	case ctx.Err() == context.DeadlineExceeded:
		return Result{Outcome: fmt.Sprintf("timed out after %s", wall)}, nil
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return Result{Outcome: "killed: " + ws.Signal().String()}, nil
		}
		return Result{Outcome: "failed: " + lastLine(stderr, fmt.Sprintf("exit status %d", exit.ExitCode()))}, nil
	}
	return Result{}, fmt.Errorf("sandbox: python3 did not start: %w", err)
}

// lastLine is the last non-blank line of s (a traceback's error), or otherwise.
func lastLine(s, otherwise string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return otherwise
}

// limited is a writer keeping at most n bytes (a program may write without end).
type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
