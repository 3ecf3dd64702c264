package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evalflow/evalflow/devkit/localserver"
)

// proc is a process of the node, recorded in Dir/pids as NN-name holding
// "PID PROGRAM", NN its place in the start order.
type proc struct {
	Name    string
	PID     int
	Program string
}

// Spawn starts program detached (its own session: it outlives the caller), its
// output in Dir/logs/name.log and its PID recorded, then waits until ready is nil.
// The node's own parts start so; so does what runs beside it (Traefik for Knative),
// and Down stops them all.
func (n *Node) Spawn(ctx context.Context, name string, ready func(context.Context) error, within time.Duration, program string, args ...string) error {
	procs, _ := recorded(n.Dir)
	return n.spawnAs(ctx, fmt.Sprintf("%02d-%s", len(procs), name), ready, within, program, args...)
}

// spawnAs is Spawn, its PID recorded under slot (NN-name: Down stops the slots in
// reverse order).
func (n *Node) spawnAs(ctx context.Context, slot string, ready func(context.Context) error, within time.Duration, program string, args ...string) error {
	name := slot[3:]
	program, err := exec.LookPath(program)
	if err != nil {
		return fmt.Errorf("node: %s: %w", name, err)
	}
	logPath := filepath.Join(n.Dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(program, args...)
	cmd.Dir = n.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node: start %s: %w", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reaps it while this process lives
	pidDir := filepath.Join(n.Dir, "pids")
	if err := os.MkdirAll(pidDir, 0o755); err != nil {
		return err
	}
	record := fmt.Sprintf("%d %s\n", cmd.Process.Pid, program)
	if err := os.WriteFile(filepath.Join(pidDir, slot), []byte(record), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	if err := localserver.WaitReady(ctx, name, ready, within, exited, logPath); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// Restart stops the node's process name and starts it again as it was started (its
// command line, its log, its place in the record), as a service manager restarting
// it would, then waits until ready (nil: until it runs). The pods go on meanwhile:
// their shims are neither containerd's children nor the kubelet's.
func (n *Node) Restart(ctx context.Context, name string, ready func(context.Context) error) error {
	procs, err := recorded(n.Dir)
	if err != nil {
		return err
	}
	for i, p := range procs {
		if p.Name != name {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		if err != nil || !p.alive() {
			return fmt.Errorf("node: restart %s: it does not run (pid %d)", name, p.PID)
		}
		args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		p.stop(10 * time.Second)
		if ready == nil {
			ready = func(context.Context) error { return nil }
		}
		return n.spawnAs(ctx, fmt.Sprintf("%02d-%s", i, name), ready, time.Minute, p.Program, args[1:]...)
	}
	return fmt.Errorf("node: restart %s: no such process of the node", name)
}

// recorded lists the node's processes in start order (ReadDir sorts by name).
func recorded(dir string) ([]proc, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "pids"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var procs []proc
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "pids", e.Name()))
		if err != nil {
			return nil, err
		}
		pid, program, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		p := proc{Name: e.Name()[3:], Program: program}
		if p.PID, err = strconv.Atoi(pid); err != nil {
			return nil, fmt.Errorf("node: pids/%s: %w", e.Name(), err)
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// alive is whether the PID still runs the program recorded for it (not a PID the
// kernel has since given to another).
func (p proc) alive() bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	if err != nil || exe != p.Program {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	return err == nil && !strings.Contains(string(stat), ") Z ")
}

// stop ends the process: SIGTERM, and SIGKILL after grace.
func (p proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for p.alive() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if p.alive() {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
		for i := 0; p.alive() && i < 100; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// processesWith lists the PIDs whose command line contains s.
func processesWith(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}
