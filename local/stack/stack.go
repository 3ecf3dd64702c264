// Package stack brings up evalflow in local mode: redis-server, the local broker
// routing by triggers/*.yaml, the local job runtime (the runner as a process), and
// every function as its own process, as Knative would run them. Redis keeps its data
// in an append-only file in the state directory, and it and every function are
// supervised: one that exits (a crash, a kill -9) is started again, with backoff, on
// the same port.
package stack

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/evalflow/evalflow/eventing"
	"github.com/evalflow/evalflow/triggers"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/local/broker"
	"github.com/evalflow/evalflow/localjob"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/oci"
)

// BrokerName is the broker the triggers name.
const BrokerName = "evalflow"

// Functions are evalflow's functions, one per step of evalflow.Steps (the one list of
// steps): each is named by its step id, lives in functions/<id>, and its Knative
// Service is "evalflow-" + its id.
var Functions = func() []string {
	names := make([]string, len(evalflow.Steps))
	for i, st := range evalflow.Steps {
		names[i] = string(st.ID)
	}
	return names
}()

// Config says how to run the stack.
type Config struct {
	// StateDir holds Redis, job directories, results, the OCI layout and logs.
	StateDir string
	// Triggers are the Trigger manifests the local broker routes by, and Eventing the
	// manifests holding the feature flags (eventing.Features) and the PingSources:
	// the project's own, built into the binary, when nil.
	Triggers, Eventing fs.FS
	DataDir            string
	// Executable is the evalflow binary: functions run as `Executable function NAME`.
	Executable string
	// RunnerPath is the evalflow-runner binary.
	RunnerPath string
	// Commands are the other engines' local programs (engine → path), see LookCommands.
	Commands map[string]string
	// RedisAddr uses a running Redis instead of starting one.
	RedisAddr string
	// APIPort is the start function's port (0: a free one).
	APIPort int
	// OCI is where results go; empty means an OCI layout in StateDir/oci.
	OCI      oci.Config
	LogLevel string
	Log      *slog.Logger
	// ExtraEnv is added to every function's environment.
	ExtraEnv []string
	// LoseEvents is the broker's Options.Lose: for tests of lost events.
	LoseEvents func(event.Event) bool
	// TokensFile holds the callers' tokens (auth.Parse); empty: StateDir/tokens, made
	// with an operator token the first time.
	TokensFile string
	// JobAddress is an address of this machine that Kubernetes Jobs reach it at (a
	// node on this machine: its node address). The broker also listens there, for
	// the Jobs' progress reports. Empty: Jobs report to the broker's loopback address.
	JobAddress string
}

// Stack is a running local evalflow.
type Stack struct {
	// API is the start function's URL (POST /evals/start, GET /evals/{id}, ...).
	API string
	// Broker is the broker's ingress URL.
	Broker string
	// Functions maps each function to its URL.
	Functions map[string]string
	// Metrics maps each function to the URL of its Prometheus metrics (start's are on
	// the API).
	Metrics map[string]string
	Redis   string
	// RedisPassword is what the stack's own Redis asks of a client ("" for the
	// config's RedisAddr).
	RedisPassword string
	// OperatorToken is the operator's token of the tokens file the stack made ("" when
	// the config named its own file).
	OperatorToken string

	cfg Config
	// supervised are the processes kept running, by name ("redis", or a function's).
	supervised map[string]*localserver.Supervisor
	// BrokerToken is what the broker's ingress asks of what posts to it: evalflow's
	// own processes have it (a job's reports, signed per run, need none).
	BrokerToken string
	// deliveryToken is what the broker sends with each delivery: start takes a
	// Trigger's delivery only with it.
	deliveryToken string
	// jobsToken is what the job runtime asks of deploy.
	jobsToken string
	stops     []func()
	jobs      *localjob.Server
	brk       *broker.Broker
	servers   []*http.Server
	// jobCallback is the broker as Kubernetes Jobs reach it (Config.JobAddress).
	jobCallback string
}

// Up starts everything and returns once every function is ready: Redis, the broker
// and the job runtime in process, then each function as its own process, then the
// PingSources' ticks.
func Up(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.Triggers == nil {
		cfg.Triggers = triggers.FS
	}
	if cfg.Eventing == nil {
		cfg.Eventing = eventing.FS
	}
	if st, err := os.Stat(cfg.DataDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("the data directory %q is not a directory: give --data DIR (../shared/datasets beside a checkout)", cfg.DataDir)
	}
	s := &Stack{cfg: cfg, Functions: map[string]string{}, Metrics: map[string]string{}, supervised: map[string]*localserver.Supervisor{}}
	defer func() {
		if err != nil {
			s.Down()
		}
	}()
	sealKey, err := s.prepare(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.prepareTokens(); err != nil {
		return nil, err
	}
	// The in-process servers bind first; the functions' ports are picked after, so
	// none can take another's.
	brokerL, brokerURL, err := listen()
	if err != nil {
		return nil, err
	}
	jobsL, jobsURL, err := listen()
	if err != nil {
		brokerL.Close()
		return nil, err
	}
	s.Broker = brokerURL
	ports, err := s.pickPorts()
	if err != nil {
		return nil, err
	}
	fctx, err := broker.FeatureContext(ctx, cfg.Eventing, eventing.Features)
	if err != nil {
		return nil, err
	}
	sender, err := s.serveBroker(fctx, brokerL, jobsL)
	if err != nil {
		return nil, err
	}
	if err := s.exposeBroker(); err != nil {
		return nil, err
	}
	if err := s.startFunctions(ctx, ports, s.functionEnv(sealKey, jobsURL)); err != nil {
		return nil, err
	}
	// The jobs an earlier evalflow on this state left (killed, or stopped) go on,
	// now that job-watch hears their reports.
	if n, err := s.jobs.Adopt(); err != nil {
		return nil, err
	} else if n > 0 {
		s.cfg.Log.Info("jobs left by an earlier evalflow started again", "jobs", n)
	}
	if err := s.tick(fctx, sender); err != nil {
		return nil, err
	}
	return s, nil
}

// prepare makes the state directories, loads (or makes) the seal key, and starts
// Redis unless the config names one.
func (s *Stack) prepare(ctx context.Context) (sealKey string, err error) {
	if err := ownerOnly(s.cfg.StateDir); err != nil {
		return "", fmt.Errorf("stack: state directory: %w", err)
	}
	for _, d := range []string{"logs", "jobs", "results"} {
		if err := os.MkdirAll(filepath.Join(s.cfg.StateDir, d), 0o700); err != nil {
			return "", err
		}
	}
	if sealKey, err = loadSealKey(filepath.Join(s.cfg.StateDir, "seal.key")); err != nil {
		return "", err
	}
	if s.Redis = s.cfg.RedisAddr; s.Redis == "" {
		port, err := localserver.FreePort()
		if err != nil {
			return "", err
		}
		dir := filepath.Join(s.cfg.StateDir, "redis")
		s.RedisPassword = auth.NewToken() // new at each start: only this stack's processes hold it
		if err := s.supervise(ctx, "redis", func(ctx context.Context) (*localserver.Proc, error) {
			return localserver.PersistentRedis(ctx, dir, port, s.RedisPassword)
		}); err != nil {
			return "", err
		}
		s.Redis = "127.0.0.1:" + strconv.Itoa(port)
	}
	return sealKey, nil
}

// pickPorts gives each function a free port (start the configured API port, if any).
func (s *Stack) pickPorts() (map[string]int, error) {
	free, err := localserver.FreePorts(len(Functions))
	if err != nil {
		return nil, err
	}
	ports := map[string]int{}
	for i, name := range Functions {
		ports[name] = free[i]
		if name == string(evalflow.StepStart) && s.cfg.APIPort != 0 {
			ports[name] = s.cfg.APIPort
		}
		s.Functions[name] = "http://127.0.0.1:" + strconv.Itoa(ports[name])
	}
	s.API = s.Functions[string(evalflow.StepStart)]
	return ports, nil
}

// Down stops jobs, functions, the broker and Redis.
func (s *Stack) Down() {
	if s.jobs != nil {
		s.jobs.Shutdown()
	}
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	if s.brk != nil {
		s.brk.Shutdown()
	}
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
}

// StateDir is where the stack keeps its state.
func (s *Stack) StateDir() string { return s.cfg.StateDir }

// ForBenchmark brings up a stack of the checkout in the working directory (its
// triggers and feature flags), with evalflow and evalflow-runner from beside the
// running executable, datasets from data and the state in a new temporary directory.
// down stops it and removes the state.
func ForBenchmark(ctx context.Context, data string, extraEnv ...string) (s *Stack, down func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	bin := filepath.Dir(exe)
	state, err := os.MkdirTemp("", "evalflow-bench-")
	if err != nil {
		return nil, nil, err
	}
	dataDir, _ := filepath.Abs(data)
	s, err = Up(ctx, Config{StateDir: state, DataDir: dataDir,
		Executable: filepath.Join(bin, "evalflow"), RunnerPath: filepath.Join(bin, "evalflow-runner"), LogLevel: "warn",
		ExtraEnv: extraEnv})
	if err != nil {
		os.RemoveAll(state)
		return nil, nil, err
	}
	return s, func() { s.Down(); os.RemoveAll(state) }, nil
}
