// Package testserver starts the real servers evalflow's tests run against (redis-server,
// docker-registry, ollama with the tiny model) on 127.0.0.1 through localserver, each
// in the test's temporary directory and stopped when the test ends. The Makefile
// installs them (make deps). Where one is missing a test skips saying so — unless
// EVALFLOW_REQUIRE_SERVERS=1 (as `make test` sets), where it fails.
package testserver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/evalflow/evalflow/devkit/localserver"
)

// missing skips t (or fails it under EVALFLOW_REQUIRE_SERVERS=1).
func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("EVALFLOW_REQUIRE_SERVERS") == "1" {
		t.Fatal(what)
	}
	t.Skip("skipped: " + what)
}

// SharedDir returns ../shared beside the checkout (datasets and models), or skips the
// test saying so where it is absent.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("EVALFLOW_SHARED_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0) // <checkout>/devkit/testserver/testserver.go
		dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "shared")
	}
	if _, err := os.Stat(filepath.Join(dir, "datasets", "mmlu")); err != nil {
		t.Skipf("skipped: ../shared (datasets and models) is not beside the checkout (looked in %s)", dir)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// Redis starts redis-server and returns its address.
func Redis(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		missing(t, "redis-server is not installed (make deps)")
	}
	p, err := localserver.Redis(context.Background(), t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p.Addr
}

// Registry starts docker-registry; with user set it asks for basic auth with user and
// password (htpasswd -B). It returns the registry's address.
func Registry(t testing.TB, user, password string) string { return RegistryOn(t, "", user, password) }

// RegistryOn is Registry on host, an address of this machine (127.0.0.1 when empty).
func RegistryOn(t testing.TB, host, user, password string) string {
	t.Helper()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		missing(t, "docker-registry is not installed (make deps)")
	}
	dir := t.TempDir()
	htpasswd := ""
	if user != "" {
		if _, err := exec.LookPath("htpasswd"); err != nil {
			missing(t, "htpasswd (apache2-utils) is not installed (make deps)")
		}
		out, err := exec.Command("htpasswd", "-B", "-C", "4", "-bn", user, password).Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, err := localserver.Registry(context.Background(), dir, host, htpasswd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p.Addr
}

// Model is the tiny model the tests evaluate.
const Model = "stories260k"

// Ollama serves the tiny model from ../shared/models and returns its base URL
// (http://127.0.0.1:PORT). parallel is OLLAMA_NUM_PARALLEL (0: default).
func Ollama(t testing.TB, parallel int) string { return OllamaOn(t, "", parallel) }

// OllamaOn is Ollama on host, an address of this machine (127.0.0.1 when empty).
func OllamaOn(t testing.TB, host string, parallel int) string {
	t.Helper()
	shared := SharedDir(t)
	bin := localserver.OllamaBinary()
	if _, err := os.Stat(bin); err != nil {
		missing(t, fmt.Sprintf("ollama is not built at %s (make deps runs hack/install-ollama.sh)", bin))
	}
	ctx := context.Background()
	p, err := localserver.Ollama(ctx, bin, t.TempDir(), host, parallel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	if err := localserver.CreateModel(ctx, bin, p.Addr, Model, filepath.Join(shared, "models", "stories260K.gguf"), 1); err != nil {
		t.Fatal(err)
	}
	return "http://" + p.Addr
}

// LlamaEcho serves the tiny model from ../shared/models with hack/llama-echo, a
// completions server that scores echoed prompts (the loglikelihood method), and returns
// its base URL. hack/install-llama-echo.sh builds it ($EVALFLOW_LLAMA_ECHO names it).
func LlamaEcho(t testing.TB) string {
	t.Helper()
	shared := SharedDir(t)
	bin := os.Getenv("EVALFLOW_LLAMA_ECHO")
	if bin == "" {
		missing(t, "EVALFLOW_LLAMA_ECHO is not set: EVALFLOW_LLAMA_ECHO=$(hack/install-llama-echo.sh), as make test does")
	}
	if _, err := os.Stat(bin); err != nil {
		missing(t, "llama-echo is not built at "+bin+" (hack/install-llama-echo.sh builds it)")
	}
	p, err := localserver.LlamaEcho(context.Background(), bin, t.TempDir(), filepath.Join(shared, "models", "stories260K.gguf"), Model, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return "http://" + p.Addr
}

// Oras returns the oras CLI (hack/install-oras.sh caches it), or skips.
func Oras(t testing.TB) string {
	t.Helper()
	p := os.Getenv("EVALFLOW_ORAS")
	if p == "" {
		p = filepath.Join(localserver.CacheDir(), "oras-1.3.6", "bin", "oras")
	}
	if _, err := os.Stat(p); err != nil {
		missing(t, "the oras CLI is not built at "+p+" (make deps runs hack/install-oras.sh)")
	}
	return p
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Kube starts a real Kubernetes control plane (etcd, kube-apiserver with RBAC, and with
// o.Controllers kube-controller-manager) built by hack/install-kube.sh, or skips.
func Kube(t testing.TB, o localserver.KubeOptions) *localserver.Kube {
	t.Helper()
	bin := localserver.KubeBinDir()
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		missing(t, "the Kubernetes control plane is not built in "+bin+" (make deps runs hack/install-kube.sh)")
	}
	k, err := localserver.StartKube(context.Background(), bin, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k
}

// Browser returns Debian's chromium and the node_modules directory that holds
// playwright-core (hack/install-browser.sh installs both), or skips.
func Browser(t testing.TB) (chromium, nodeModules string) {
	t.Helper()
	chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		missing(t, "Debian's chromium is not installed (make test-deps runs hack/install-browser.sh)")
	}
	nodeModules = os.Getenv("EVALFLOW_PLAYWRIGHT")
	if nodeModules == "" {
		nodeModules = filepath.Join(localserver.CacheDir(), "playwright-core-1.64.1", "node_modules")
	}
	if _, err := os.Stat(filepath.Join(nodeModules, "playwright-core")); err != nil {
		missing(t, "playwright-core is not installed in "+nodeModules+" (make test-deps runs hack/install-browser.sh)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		missing(t, "node is not installed")
	}
	return chromium, nodeModules
}
