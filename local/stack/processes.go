package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/evalflow/evalflow/devkit/localserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

// The functions as processes of the evalflow command, supervised.

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
