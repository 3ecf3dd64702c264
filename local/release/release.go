// Package release builds an evalflow release: every image evalflow runs, built without a
// Docker engine and pushed, and one manifest that installs all of it on a cluster
// running Knative Serving and Eventing (make release writes it to dist/evalflow.yaml):
//
//   - the five functions, each a Knative Service rendered from its func.yaml, its image
//     the function alone served by func-go (local/cmd/evalflow-function);
//   - the built-in runner and the sandbox pod, the images evaluation Jobs run, pinned
//     for the deploy step (EVALFLOW_JOB_IMAGES, EVALFLOW_JOB_IMAGE_DIGESTS);
//   - Redis and the results registry, as images of Debian's redis-server and
//     docker-registry, which a cluster pulls where no public image can be pulled;
//   - the namespaces, RBAC, NetworkPolicies, Redis and the registry, the broker, the
//     SinkBinding and the EventPolicy, the Triggers and the Jobs' ApiServerSource, from
//     eventing/, broker/ and triggers/.
//
// Every image is named by digest; no Secret is in the manifest (local/install makes
// them). The images carry no build time and the manifest no date, so building twice
// from one commit gives the same digests and the same file.
package release

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/evalflow/evalflow/devkit/images"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/oci"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Config says what to build and where its images go.
type Config struct {
	// Root is the checkout: functions/, eventing/, broker/, triggers/.
	Root string
	// Registry is HOST[:PORT]/PREFIX the images are pushed under; PlainHTTP: it speaks
	// HTTP. PodRegistry is the same registry as the cluster's nodes and pods reach it,
	// when by another name (kind's kind-registry:5000/PREFIX); default Registry.
	Registry, PodRegistry string
	PlainHTTP             bool
	// Platform is the os/arch the cluster's nodes run; default linux and this
	// machine's architecture.
	Platform string
	// SandboxPython is Debian's python3 unpacked for the sandbox pod's image
	// (hack/install-sandbox-python.sh).
	SandboxPython string
	// Data, when set, is a benchmark data directory published beside the images for
	// the evaluation Jobs (EVALFLOW_DATA_ARTIFACT).
	Data string
	// Version is stamped into the binaries (evalflow.Version); default the checkout's
	// git describe --always --dirty, or "dev" outside git.
	Version string
	// Env adds settings to functions: step (start, deploy, ...) → NAME=VALUE, after
	// func.yaml's (a developer's deployment: shorter timers for a test).
	Env map[string][]string
	// Log receives what building does; nil: nothing.
	Log io.Writer
}

// Release is what Build made.
type Release struct {
	// Images maps each image (evalflow-start, ..., evalflow-runner, evalflow-sandbox,
	// redis, registry) to its reference by digest, as pods pull it.
	Images map[string]string
	// Data is the published benchmark data, as pods pull it ("": none).
	Data string
	// Manifest is the release manifest: multi-document YAML, applied in its order.
	Manifest []byte
}

// Flags registers the flags that set cfg: -registry, -plain-http, -pod-registry,
// -platform, -root, -data and -sandbox-python.
func (cfg *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&cfg.Registry, "registry", "", "HOST[:PORT]/PREFIX the images are pushed under")
	fs.BoolVar(&cfg.PlainHTTP, "plain-http", false, "the registry speaks plain HTTP")
	fs.StringVar(&cfg.PodRegistry, "pod-registry", "", "-registry as the cluster's pods reach it, if not by the same name (kind's local registry: kind-registry:5000/PREFIX)")
	fs.StringVar(&cfg.Platform, "platform", "", "the os/arch the cluster's nodes run (default: linux/ this machine's; make deploy: the nodes')")
	fs.StringVar(&cfg.Root, "root", ".", "the checkout")
	fs.StringVar(&cfg.Data, "data", "", "also publish this benchmark data directory for the evaluation Jobs")
	fs.StringVar(&cfg.Version, "version", "", "the version stamped into the binaries (default: git describe --always --dirty)")
	fs.StringVar(&cfg.SandboxPython, "sandbox-python", "", "Debian's python3 for the sandbox pod's image (hack/install-sandbox-python.sh)")
}

// withDefaults fills in what cfg leaves to its defaults.
func (cfg Config) withDefaults() Config {
	cfg.PodRegistry = strings.TrimSuffix(cmp.Or(cfg.PodRegistry, cfg.Registry), "/")
	cfg.Registry = strings.TrimSuffix(cfg.Registry, "/")
	cfg.Platform = cmp.Or(cfg.Platform, "linux/"+runtime.GOARCH)
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	return cfg
}

// Build builds and pushes every image, and renders the manifest.
func Build(ctx context.Context, cfg Config) (*Release, error) {
	if cfg.Registry == "" || cfg.Root == "" {
		return nil, fmt.Errorf("release: a registry and the checkout are needed")
	}
	cfg = cfg.withDefaults()
	if cfg.Version == "" {
		cfg.Version = "dev"
		if out, err := exec.CommandContext(ctx, "git", "-C", cfg.Root, "describe", "--always", "--dirty").Output(); err == nil {
			cfg.Version = strings.TrimSpace(string(out))
		}
	}
	work, err := os.MkdirTemp("", "evalflow-release")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	b := &builder{cfg: cfg, work: work, release: &Release{Images: map[string]string{}}}
	for _, stage := range []struct {
		what string
		run  func(context.Context) error
	}{
		{"the functions' images", b.functions},
		{"the Jobs' images: the runner and the sandbox", b.jobImages},
		{"Redis and the results registry, from Debian's programs", b.stores},
		{"the benchmark data", b.data},
		{"the manifest", b.manifest},
	} {
		fmt.Fprintf(cfg.Log, "release: %s\n", stage.what)
		if err := stage.run(ctx); err != nil {
			return nil, fmt.Errorf("release: %s: %w", stage.what, err)
		}
	}
	return b.release, nil
}

type builder struct {
	cfg     Config
	work    string
	release *Release
}

// FunctionTag is the build tag of local/cmd/evalflow-function that serves step's
// function.
func FunctionTag(step evalflow.StepID) string {
	return "evalflow_" + strings.ReplaceAll(string(step), "-", "")
}

// FunctionImage is the image name of step's function.
func FunctionImage(step evalflow.StepID) string { return "evalflow-" + string(step) }

// functions builds each function's binary and image.
func (b *builder) functions(ctx context.Context) error {
	for _, step := range evalflow.Steps {
		bin := filepath.Join(b.work, FunctionImage(step.ID))
		if err := b.goBuild(ctx, bin, "./local/cmd/evalflow-function", FunctionTag(step.ID)); err != nil {
			return fmt.Errorf("%s: %w", step.ID, err)
		}
		// func-go listens where LISTEN_ADDRESS says: every address of the pod, on
		// Knative's port.
		if err := b.image(ctx, FunctionImage(step.ID), "latest", images.Spec{Binary: bin, Path: "/" + FunctionImage(step.ID), Env: []string{"LISTEN_ADDRESS=0.0.0.0:8080"}}); err != nil {
			return fmt.Errorf("%s: %w", step.ID, err)
		}
	}
	return nil
}

// jobImages builds the built-in runner's image and the sandbox pod's, named as the
// engine registry and kube.SandboxImage name them.
func (b *builder) jobImages(ctx context.Context) error {
	e, _ := engines.Default().Get(evalflow.DefaultEngine)
	runner := filepath.Join(b.work, "evalflow-runner")
	if err := b.goBuild(ctx, runner, "./runner/cmd/evalflow-runner", ""); err != nil {
		return err
	}
	repo, tag := engines.RepoTag(e.Image)
	if err := b.image(ctx, repo, tag, images.Spec{Binary: runner, Path: e.Command[0]}); err != nil {
		return err
	}
	if b.cfg.SandboxPython == "" {
		return fmt.Errorf("the sandbox's python3 is not given (hack/install-sandbox-python.sh)")
	}
	sandbox := filepath.Join(b.work, "evalflow-sandbox")
	if err := b.goBuild(ctx, sandbox, "./runner/cmd/evalflow-sandbox", ""); err != nil {
		return err
	}
	repo, tag = engines.RepoTag(kube.SandboxImage)
	return b.image(ctx, repo, tag, images.Spec{Binary: sandbox, Path: evalflow.SandboxProgram, Root: b.cfg.SandboxPython})
}

// stores builds Redis's and the registry's images from this machine's Debian
// programs (apt: redis-server, docker-registry).
func (b *builder) stores(ctx context.Context) error {
	if b.cfg.Platform != "linux/"+runtime.GOARCH {
		return fmt.Errorf("Redis and the registry are this machine's programs, for linux/%s: not %s", runtime.GOARCH, b.cfg.Platform)
	}
	for _, p := range []struct{ program, path, repo string }{
		{"/usr/bin/redis-server", "/usr/local/bin/redis-server", "redis"},
		{"/usr/bin/docker-registry", "/usr/local/bin/registry", "registry"},
	} {
		img, err := images.Program(p.program, p.path)
		if err != nil {
			return err
		}
		if err := b.push(ctx, img, p.repo, "debian"); err != nil {
			return err
		}
	}
	return nil
}

// data publishes the benchmark data, when given.
func (b *builder) data(ctx context.Context) error {
	if b.cfg.Data == "" {
		return nil
	}
	dest, err := oci.Open(oci.Config{Registry: b.cfg.Registry + "/datasets", PlainHTTP: b.cfg.PlainHTTP})
	if err != nil {
		return err
	}
	a, err := dest.PushDir(ctx, strings.TrimRight(b.cfg.Data, "/"), "datasets")
	if err != nil {
		return err
	}
	b.release.Data = b.cfg.PodRegistry + "/datasets@" + a.Digest
	return nil
}

// goBuild builds pkg of the checkout for the platform, static, without paths or a
// symbol table: the same source gives the same binary.
func (b *builder) goBuild(ctx context.Context, out, pkg, tags string) error {
	goos, goarch, _ := strings.Cut(b.cfg.Platform, "/")
	args := []string{"build", "-trimpath", "-ldflags=-s -w -X github.com/evalflow/evalflow/shared.Version=" + b.cfg.Version, "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = b.cfg.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v: %s", pkg, err, out)
	}
	return nil
}

// image builds the image of a static binary for the platform and pushes it.
func (b *builder) image(ctx context.Context, repo, tag string, s images.Spec) error {
	s.OS, s.Architecture, _ = strings.Cut(b.cfg.Platform, "/")
	img, err := images.Build(s)
	if err != nil {
		return err
	}
	return b.push(ctx, img, repo, tag)
}

// push pushes img as REGISTRY/repo:tag and records it by digest, as pods pull it.
func (b *builder) push(ctx context.Context, img v1.Image, repo, tag string) error {
	digest, err := images.PushTo(ctx, img, b.cfg.Registry+"/"+repo+":"+tag, b.cfg.PlainHTTP)
	if err != nil {
		return err
	}
	b.release.Images[repo] = b.cfg.PodRegistry + "/" + repo + "@" + digest.String()
	fmt.Fprintf(b.cfg.Log, "release: %s\n", b.release.Images[repo])
	return nil
}

// jobDigests is EVALFLOW_JOB_IMAGE_DIGESTS: the Jobs' images by digest.
func (rel *Release) jobDigests() string {
	var pins []string
	runner, _ := engines.Default().Get(evalflow.DefaultEngine)
	for _, image := range []string{runner.Image, kube.SandboxImage} {
		repo, _ := engines.RepoTag(image)
		if _, digest, ok := strings.Cut(rel.Images[repo], "@"); ok {
			pins = append(pins, repo+"@"+digest)
		}
	}
	return strings.Join(pins, ",")
}
