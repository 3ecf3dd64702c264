// Package localserver starts the real servers evalflow uses in local mode and in tests
// — redis-server, docker-registry (CNCF distribution), ollama — as child processes on
// 127.0.0.1, and waits until they answer.
package localserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a running server.
type Proc struct {
	Addr string // 127.0.0.1:PORT
	Log  string // its output file
	cmd  *exec.Cmd
	done chan struct{}
}

// Stop ends the server and waits for it.
func (p *Proc) Stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
func FreePorts(n int) ([]int, error) { return FreePortsOn("127.0.0.1", n) }

// FreePortsOn is FreePorts on host, an address of this machine. The ports are picked
// at random below the system's ephemeral range: the ports it gives outgoing
// connections (a test's many runners and clients) would otherwise take one between
// the check and the bind of the server it is for. They stay clear of the node's
// fixed ports (kubelet's 10250 and its neighbours) and of Kubernetes' NodePort range
// (30000-32767).
func FreePortsOn(host string, n int) ([]int, error) {
	const floor = 11000
	top := min(ephemeralLow(), 30000)
	ports := make([]int, 0, n)
	seen := map[int]bool{}
	for tries := 0; len(ports) < n && tries < 100*n; tries++ {
		port := floor + rand.IntN(top-floor)
		if seen[port] {
			continue
		}
		seen[port] = true
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue // taken
		}
		l.Close()
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("localserver: no %d free ports on %s between %d and %d", n, host, floor, top)
	}
	return ports, nil
}

// ephemeralLow is the first port of the system's ephemeral range (Linux's default
// where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(b)); err == nil && len(f) == 2 {
		if low, err := strconv.Atoi(f[0]); err == nil && low > 11000 {
			return low
		}
	}
	return 32768
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// Start runs program with args, its output in dir/name.log, and waits until ready
// returns nil (or within passes).
func Start(ctx context.Context, dir, name string, env []string, ready func(context.Context) error, within time.Duration, program string, args ...string) (*Proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644) // a restart adds to it
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(program, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("localserver: start %s: %w", name, err)
	}
	p := &Proc{Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(p.done) }()
	if err := WaitReady(ctx, name, ready, within, p.done, logPath); err != nil {
		p.Stop()
		return nil, fmt.Errorf("localserver: %w", err)
	}
	return p, nil
}

// WaitReady waits until ready returns nil, within; exited closing first (the
// process ended) is an error, which quotes the end of the process's log.
func WaitReady(ctx context.Context, name string, ready func(context.Context) error, within time.Duration, exited <-chan struct{}, logPath string) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start: %s", name, tail(logPath))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s: %v (log: %s)", name, within, err, tail(logPath))
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = s[len(s)-800:]
	}
	return s
}

// DialReady is ready when addr accepts TCP connections.
func DialReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// HTTPOK is ready when url answers 200.
func HTTPOK(url string) func(context.Context) error {
	return httpReady(http.DefaultClient, url, func(code int) bool { return code == http.StatusOK })
}

// HTTPReady is ready when url answers with a status below 500.
func HTTPReady(url string) func(context.Context) error {
	return httpReady(http.DefaultClient, url, func(code int) bool { return code < 500 })
}

// TLSOK is ready when url answers 200 over TLS, whatever its certificate: a server
// that writes its self-signed one as it starts (kube-apiserver's /readyz needs no
// credentials).
func TLSOK(url string) func(context.Context) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return httpReady(c, url, func(code int) bool { return code == http.StatusOK })
}

func httpReady(c *http.Client, url string, ok func(int) bool) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if !ok(resp.StatusCode) {
			return errors.New(resp.Status)
		}
		return nil
	}
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// loopback is port (a free one for 0) and its 127.0.0.1 address.
func loopback(port int) (int, string, error) {
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return 0, "", err
		}
	}
	return port, addr(port), nil
}

// onHost is a free port's address on host (127.0.0.1 when empty): an address of this
// machine, e.g. the one a local Kubernetes node's pods reach it at.
func onHost(host string) (string, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("localserver: a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Redis starts redis-server on port (0: a free one), data in dir, no persistence.
func Redis(ctx context.Context, dir string, port int) (*Proc, error) {
	return redis(ctx, dir, port, false, "")
}

// PersistentRedis is Redis keeping its data in an append-only file in dir, written
// before each answer and synced every second: a redis-server killed outright and
// started again on dir has every write it acknowledged. With password set, a client
// must give it (AUTH) before any command.
func PersistentRedis(ctx context.Context, dir string, port int, password string) (*Proc, error) {
	return redis(ctx, dir, port, true, password)
}

func redis(ctx context.Context, dir string, port int, persist bool, password string) (*Proc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("localserver: redis-server not installed (make deps installs it): %w", err)
	}
	port, a, err := loopback(port)
	if err != nil {
		return nil, err
	}
	// The settings go in a file only its owner reads, never on the command line
	// (which any local user can read): the password among them.
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly %s\nappendfsync everysec\ndir %q\n",
		port, map[bool]string{true: "yes", false: "no"}[persist], dir)
	if password != "" {
		conf += fmt.Sprintf("requirepass %q\n", password)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := os.Chmod(confPath, 0o600); err != nil { // a file an older run left readable
		return nil, err
	}
	p, err := Start(ctx, dir, "redis", nil, DialReady(a), 10*time.Second, bin, confPath)
	if err != nil {
		return nil, err
	}
	p.Addr = a
	return p, nil
}

// Registry starts Debian's docker-registry (CNCF distribution) on a free port of host
// (127.0.0.1 when empty), storing in dir; with htpasswd set (a bcrypt file) it asks
// for basic auth.
func Registry(ctx context.Context, dir, host, htpasswd string) (*Proc, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("localserver: docker-registry not installed (make deps installs it): %w", err)
	}
	a, err := onHost(host)
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), a)
	if htpasswd != "" {
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: evalflow\n    path: %s\n", htpasswd)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := Start(ctx, dir, "registry", nil, HTTPReady("http://"+a+"/v2/"), 15*time.Second, bin, "serve", cfgPath)
	if err != nil {
		return nil, err
	}
	p.Addr = a
	return p, nil
}

// Ollama serves models from dir/models with bin (see hack/install-ollama.sh) on a
// free port of host (127.0.0.1 when empty); parallel is OLLAMA_NUM_PARALLEL (0:
// ollama's default).
func Ollama(ctx context.Context, bin, dir, host string, parallel int) (*Proc, error) {
	a, err := onHost(host)
	if err != nil {
		return nil, err
	}
	env := []string{"HOME=" + filepath.Join(dir, "home"), "OLLAMA_HOST=" + a,
		"OLLAMA_MODELS=" + filepath.Join(dir, "models"), "OLLAMA_KEEP_ALIVE=1h", "OLLAMA_NOPRUNE=1"}
	if parallel > 0 {
		env = append(env, "OLLAMA_NUM_PARALLEL="+strconv.Itoa(parallel))
	}
	p, err := Start(ctx, dir, "ollama", env, HTTPReady("http://"+a+"/api/version"), 30*time.Second, bin, "serve")
	if err != nil {
		return nil, err
	}
	p.Addr = a
	return p, nil
}

// CreateModel makes the model name from a GGUF file on the ollama at addr,
// deterministic (temperature 0) with a plain prompt template, computed by threads
// threads (ollama's choice when 0). One thread keeps a busy machine's tests steady:
// ggml's workers wait for each other spinning, so each step of a model computed by
// as many threads as cores stalls whenever another process takes one of them (on
// two busy cores a 4 s run took 61 s, and over 3 minutes beside the Knative tests).
func CreateModel(ctx context.Context, bin, addr, name, gguf string, threads int) error {
	dir, err := os.MkdirTemp("", "evalflow-modelfile")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mf := filepath.Join(dir, "Modelfile")
	body := "FROM " + gguf + "\nTEMPLATE \"\"\"{{ .Prompt }}\"\"\"\nPARAMETER num_ctx 512\nPARAMETER temperature 0\n"
	if threads > 0 {
		body += "PARAMETER num_thread " + strconv.Itoa(threads) + "\n"
	}
	if err := os.WriteFile(mf, []byte(body), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "create", name, "-f", mf)
	cmd.Env = append(os.Environ(), "OLLAMA_HOST="+addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("localserver: ollama create %s: %w: %s", name, err, out)
	}
	return nil
}

// OllamaBinary is where hack/install-ollama.sh caches ollama, or $EVALFLOW_OLLAMA.
func OllamaBinary() string {
	if p := os.Getenv("EVALFLOW_OLLAMA"); p != "" {
		return p
	}
	return filepath.Join(CacheDir(), "ollama-"+OllamaVersion, "bin", "ollama")
}

// OllamaVersion is the ollama the project builds (hack/install-ollama.sh).
const OllamaVersion = "0.17.4"

// LlamaEcho serves the GGUF file gguf as model name with hack/llama-echo (bin), a
// completions server that scores echoed prompts, on a free port of host (127.0.0.1
// when empty).
func LlamaEcho(ctx context.Context, bin, dir, gguf, name, host string) (*Proc, error) {
	a, err := onHost(host)
	if err != nil {
		return nil, err
	}
	p, err := Start(ctx, dir, "llama-echo", nil, HTTPOK("http://"+a+"/v1/models"), 30*time.Second, bin,
		"-addr", a, "-model", gguf, "-name", name)
	if err != nil {
		return nil, err
	}
	p.Addr = a
	return p, nil
}
