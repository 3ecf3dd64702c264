// Package testserver starts the real servers evalflow's tests run against (redis-server,
// docker-registry, ollama) on 127.0.0.1, each in a temporary directory, stopped when
// the test ends. The Makefile installs them (make deps). Where one is missing a test
// skips saying so — unless EVALFLOW_REQUIRE_SERVERS=1 (as `make test` sets), where it fails.
package testserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Need finds a program on PATH (or at an absolute path), skipping or failing the test
// where it is absent.
func Need(t testing.TB, program, installHint string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found (%s)", program, installHint)
	if os.Getenv("EVALFLOW_REQUIRE_SERVERS") == "1" {
		t.Fatal(msg)
	}
	t.Skip("skipped: " + msg)
	return ""
}

// SharedDir returns ../shared beside the checkout (data and tools), or skips the test
// with a message where it is absent (fails under EVALFLOW_REQUIRE_SHARED=1).
func SharedDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("EVALFLOW_SHARED_DIR"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	// file is <checkout>/shared/testserver/testserver.go
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared")
	if _, err := os.Stat(filepath.Join(dir, "datasets")); err != nil {
		if os.Getenv("EVALFLOW_REQUIRE_SHARED") == "1" {
			t.Fatalf("../shared (datasets, models) not found at %s", dir)
		}
		t.Skipf("skipped: ../shared (datasets, models) not found at %s", dir)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// Process is a server started for a test.
type Process struct {
	Addr string // host:port
	Dir  string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

// Start runs program with args in dir and stops it when the test ends.
func Start(t testing.TB, dir string, env []string, program string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(program, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", program, err)
	}
	p := &Process{Dir: dir, cmd: cmd, log: &log}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(program), lastBytes(log.Bytes(), 4000))
		}
	})
	return p
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not accept connections within %s: %v", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitHTTP waits until url answers with status want.
func WaitHTTP(t testing.TB, url string, want int, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer %d within %s (last: %v)", url, want, within, err)
		case <-time.After(30 * time.Millisecond):
		}
	}
}

// Redis starts a real redis-server on loopback and returns its address.
func Redis(t testing.TB) string {
	t.Helper()
	bin := Need(t, "redis-server", "make deps installs Debian's redis-server")
	port := FreePort(t)
	dir := t.TempDir()
	Start(t, dir, nil, bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	WaitTCP(t, addr, 10*time.Second)
	return addr
}
