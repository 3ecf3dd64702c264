// Package stack brings up evalflow in local mode: redis-server, the local broker
// routing by triggers/*.yaml, the local job runtime (the runner as a process), and
// every function as its own process, as Knative would run them. Redis keeps its data
// in an append-only file in the state directory, and it and every function are
// supervised: one that exits (a crash, a kill -9) is started again, with backoff, on
// the same port.
package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/local/broker"
	"github.com/evalflow/evalflow/localjob"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/engines"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/seal"
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
	StateDir    string
	TriggersDir string
	// FeaturesFile is the Knative config-features ConfigMap (eventing/config-features.yaml).
	FeaturesFile string
	DataDir      string
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
	fctx, err := broker.FeatureContext(ctx, cfg.FeaturesFile)
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

// prepareTokens makes the tokens file with an operator token where the config names
// none (StateDir/tokens, mode 0600, kept across restarts), and the broker's delivery
// token.
func (s *Stack) prepareTokens() error {
	s.deliveryToken, s.BrokerToken = auth.NewToken(), auth.NewToken()
	if s.cfg.TokensFile != "" {
		_, err := auth.Open(s.cfg.TokensFile) // a bad file is told now, not by start's log
		return err
	}
	s.cfg.TokensFile = filepath.Join(s.cfg.StateDir, "tokens")
	token, err := operatorToken(s.cfg.TokensFile)
	if err != nil {
		return fmt.Errorf("stack: tokens file: %w", err)
	}
	s.OperatorToken = token
	return nil
}

// operatorToken is the operator's token in the tokens file at path, which it makes
// (with a fresh one) when there is none.
func operatorToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		token := auth.NewToken()
		return token, os.WriteFile(path, auth.NewFile(token), 0o600)
	}
	if err != nil {
		return "", err
	}
	if _, err := auth.Parse(bytes.NewReader(b)); err != nil {
		return "", err
	}
	return auth.OperatorToken(b), nil
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

// serveBroker serves the broker, routing by triggers/, and the job runtime, which
// reports to it; it returns a sender to the broker.
func (s *Stack) serveBroker(fctx context.Context, brokerL, jobsL net.Listener) (*cloudevent.Sender, error) {
	triggers, err := broker.LoadTriggers(fctx, s.cfg.TriggersDir, BrokerName, s.resolve)
	if err != nil {
		return nil, err
	}
	s.brk = broker.New(triggers, broker.Options{Log: s.cfg.Log.With("component", "broker"), DeliveryToken: s.deliveryToken, Lose: s.cfg.LoseEvents,
		IngressToken: s.BrokerToken, Open: jobReport})
	s.serve(brokerL, s.brk)
	sender, err := cloudevent.NewSender(s.Broker, cloudevent.Bearer(s.BrokerToken))
	if err != nil {
		return nil, err
	}
	s.jobsToken = auth.NewToken()
	s.jobs = &localjob.Server{RunnerPath: s.cfg.RunnerPath, Commands: s.cfg.Commands, WorkDir: filepath.Join(s.cfg.StateDir, "jobs"),
		Events: sender, Log: s.cfg.Log.With("component", "localjob"),
		Token: s.jobsToken, OutputRoot: filepath.Join(s.cfg.StateDir, "results"), CallbackURL: s.Broker}
	s.serve(jobsL, s.jobs)
	return sender, nil
}

// jobReport is whether ev is a job's report, which a job posts to the broker without
// its token: job-watch takes only those signed with the run's own key.
func jobReport(ev event.Event) bool {
	return cloudevent.TypeOf(ev) == evalflow.TypeJobProgress || cloudevent.TypeOf(ev) == evalflow.TypeJobFinished
}

// exposeBroker serves the broker on the Jobs' address too, when the config has one.
func (s *Stack) exposeBroker() error {
	if s.cfg.JobAddress == "" {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.JobAddress, "0"))
	if err != nil {
		return fmt.Errorf("stack: the broker on the Jobs' address: %w", err)
	}
	s.serve(l, s.brk)
	s.jobCallback = "http://" + l.Addr().String()
	return nil
}

// functionEnv is the environment every function starts with.
func (s *Stack) functionEnv(sealKey, jobsURL string) []string {
	cfg := s.cfg
	ociEnv := []string{"EVALFLOW_OCI_LAYOUT=" + filepath.Join(cfg.StateDir, "oci")}
	if cfg.OCI.Registry != "" {
		ociEnv = []string{"EVALFLOW_REGISTRY=" + cfg.OCI.Registry,
			"EVALFLOW_REGISTRY_PLAIN_HTTP=" + strconv.FormatBool(cfg.OCI.PlainHTTP),
			"EVALFLOW_REGISTRY_USERNAME=" + cfg.OCI.Username, "EVALFLOW_REGISTRY_PASSWORD=" + cfg.OCI.Password}
	} else if cfg.OCI.Layout != "" {
		ociEnv = []string{"EVALFLOW_OCI_LAYOUT=" + cfg.OCI.Layout}
	}
	env := append([]string{
		"REDIS_ADDR=" + s.Redis, "REDIS_PASSWORD=" + s.RedisPassword, "EVALFLOW_SEAL_KEY=" + sealKey, "K_SINK=" + s.Broker,
		"LOG_LEVEL=" + cfg.LogLevel,
		"EVALFLOW_RESULTS_DIR=" + filepath.Join(cfg.StateDir, "results"),
		"EVALFLOW_JOBS_URL=" + jobsURL, "EVALFLOW_JOBS_TOKEN=" + s.jobsToken, "EVALFLOW_DATA_DIR=" + cfg.DataDir,
		"EVALFLOW_TOKENS_FILE=" + cfg.TokensFile, "EVALFLOW_DELIVERY_TOKEN=" + s.deliveryToken, "EVALFLOW_BROKER_TOKEN=" + s.BrokerToken,
	}, ociEnv...)
	if s.jobCallback != "" {
		env = append(env, "EVALFLOW_JOB_CALLBACK_URL="+s.jobCallback)
	}
	return append(env, cfg.ExtraEnv...)
}

// startFunctions starts each function as a process of the evalflow command and waits
// until it is ready.
func (s *Stack) startFunctions(ctx context.Context, ports map[string]int, common []string) error {
	metricsPorts, err := localserver.FreePorts(len(Functions))
	if err != nil {
		return err
	}
	for i, name := range Functions {
		env := append([]string{"LISTEN_ADDRESS=127.0.0.1:" + strconv.Itoa(ports[name])}, common...)
		s.Metrics[name] = s.Functions[name] + "/metrics"
		if name != string(evalflow.StepStart) { // a step's own port serves its events alone
			addr := "127.0.0.1:" + strconv.Itoa(metricsPorts[i])
			env = append(env, "METRICS_ADDRESS="+addr)
			s.Metrics[name] = "http://" + addr + "/metrics"
		}
		if err := s.supervise(ctx, name, func(ctx context.Context) (*localserver.Proc, error) {
			return localserver.Start(ctx, filepath.Join(s.cfg.StateDir, "logs"), name, env,
				localserver.HTTPOK(s.Functions[name]+"/health/readiness"), 30*time.Second,
				s.cfg.Executable, "function", name)
		}); err != nil {
			return fmt.Errorf("stack: function %s: %w", name, err)
		}
	}
	return nil
}

// supervise starts a process and keeps it running until Down.
func (s *Stack) supervise(ctx context.Context, name string, start func(context.Context) (*localserver.Proc, error)) error {
	sup, err := localserver.Supervise(ctx, name, s.cfg.Log.With("component", "supervisor"), start)
	if err != nil {
		return err
	}
	s.supervised[name] = sup
	s.stops = append(s.stops, sup.Stop)
	return nil
}

// PID is the process id of "redis" or a function, as it runs now (0: none).
func (s *Stack) PID(name string) int {
	if sup, ok := s.supervised[name]; ok {
		return sup.PID()
	}
	return 0
}

// Restarts counts the times "redis" or a function was started again.
func (s *Stack) Restarts(name string) int {
	if sup, ok := s.supervised[name]; ok {
		return sup.Restarts()
	}
	return 0
}

// tick plays the PingSources of eventing/ as the cluster's would (stopped first on Down).
func (s *Stack) tick(fctx context.Context, sender *cloudevent.Sender) error {
	pings, err := broker.LoadPingSources(fctx, filepath.Dir(s.cfg.FeaturesFile))
	if err != nil {
		return err
	}
	tickCtx, stopTicks := context.WithCancel(context.Background())
	for _, p := range pings {
		go p.Run(tickCtx, sender.Send, s.cfg.Log.With("component", "pingsource"))
	}
	s.stops = append(s.stops, stopTicks)
	return nil
}

// resolve maps a Knative Service named evalflow-NAME to the local function NAME.
func (s *Stack) resolve(ref *duckv1.KReference) (*url.URL, error) {
	name, ok := strings.CutPrefix(ref.Name, "evalflow-")
	if u, found := s.Functions[name]; ok && found && ref.Kind == "Service" {
		return url.Parse(u)
	}
	return nil, fmt.Errorf("no local function for %s %s", ref.Kind, ref.Name)
}

func listen() (net.Listener, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	return l, "http://" + l.Addr().String(), nil
}

// serve serves h on l until Down.
func (s *Stack) serve(l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error("local server", "addr", l.Addr().String(), "error", err)
		}
	}()
}

// Idle reports whether the broker has nothing under way.
func (s *Stack) Idle() bool { return s.brk.Idle() }

// InFlight describes the broker's deliveries under way.
func (s *Stack) InFlight() []string { return s.brk.InFlight() }

// JobsRunning counts the local job runtime's jobs running now.
func (s *Stack) JobsRunning() int { return s.jobs.Running() }

// JobsCreated counts the jobs the local job runtime has created.
func (s *Stack) JobsCreated() int { return s.jobs.Created() }

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

// loadSealKey reads the sealing key from path, making one (mode 0600) the first time.
func loadSealKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	key := seal.NewKey()
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("stack: seal key: %w", err)
	}
	return key, nil
}

// LookRunner finds evalflow-runner beside the evalflow binary, or on PATH.
func LookRunner(executable string) (string, error) { return look(executable, "evalflow-runner") }

// LookCommands finds the local command of each other engine of the registry that runs
// locally (lm-eval-adapter, opencompass-adapter) beside the evalflow binary, or on
// PATH; an engine whose command is not found runs no local jobs.
func LookCommands(executable string) map[string]string {
	commands := map[string]string{}
	r := engines.Default()
	for _, name := range r.Names() {
		e, _ := r.Get(name)
		if name == evalflow.DefaultEngine || !e.Local {
			continue
		}
		if p, err := look(executable, e.LocalCommand); err == nil {
			commands[name] = p
		}
	}
	return commands
}

func look(executable, command string) (string, error) {
	p := filepath.Join(filepath.Dir(executable), command)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return exec.LookPath(command)
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
	root, _ := filepath.Abs(".")
	dataDir, _ := filepath.Abs(data)
	s, err = Up(ctx, Config{StateDir: state, TriggersDir: filepath.Join(root, "triggers"),
		FeaturesFile: filepath.Join(root, "eventing", "config-features.yaml"), DataDir: dataDir,
		Executable: filepath.Join(bin, "evalflow"), RunnerPath: filepath.Join(bin, "evalflow-runner"), LogLevel: "warn",
		ExtraEnv: extraEnv})
	if err != nil {
		os.RemoveAll(state)
		return nil, nil, err
	}
	return s, func() { s.Down(); os.RemoveAll(state) }, nil
}

// ownerOnly makes dir (and what an older version left in it) readable by its owner
// alone, and has every file this process and its children make from now on so too
// (umask 077): the state directory holds Redis' data, keys and results.
func ownerOnly(dir string) error {
	syscall.Umask(0o077)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil || info.Mode()&fs.ModeSymlink != 0 || info.Mode().Perm()&0o077 == 0 {
			return err
		}
		return os.Chmod(path, info.Mode().Perm()&0o700)
	})
}
