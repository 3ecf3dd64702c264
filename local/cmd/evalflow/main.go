// Command evalflow runs evalflow on one machine.
//
//	evalflow run [flags]       bring the stack up, evaluate a model, show progress and scores
//	evalflow up [flags]        bring the stack up and serve until interrupted
//	evalflow function NAME     serve one function (the stack starts these)
//
// and, for a running evalflow (api.go): submit, status, list, cancel, results, compare,
// tasks; for a cluster (install.go): install, uninstall.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	fhttp "knative.dev/func-go/http"

	artifact "github.com/evalflow/evalflow/functions/artifact"
	deploy "github.com/evalflow/evalflow/functions/deploy"
	jobwatch "github.com/evalflow/evalflow/functions/job-watch"
	start "github.com/evalflow/evalflow/functions/start"
	verify "github.com/evalflow/evalflow/functions/verify"
	"github.com/evalflow/evalflow/local/stack"
	evalflow "github.com/evalflow/evalflow/shared"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "function":
		if len(os.Args) != 3 {
			usage()
		}
		stop() // func-go handles the signals itself
		err = serveFunction(os.Args[2])
	case "up":
		err = up(ctx, os.Args[2:])
	case "run":
		err = run(ctx, os.Args[2:])
	case "publish-data":
		err = publishData(ctx, os.Args[2:])
	case "submit":
		err = submit(ctx, os.Args[2:])
	case "status":
		err = status(ctx, os.Args[2:])
	case "list":
		err = list(ctx, os.Args[2:])
	case "cancel":
		err = cancel(ctx, os.Args[2:])
	case "results":
		err = results(ctx, os.Args[2:])
	case "compare":
		err = compare(ctx, os.Args[2:])
	case "deadletters":
		err = deadLetters(ctx, os.Args[2:])
	case "tasks":
		err = tasks(ctx, os.Args[2:])
	case "install":
		err = installCmd(ctx, os.Args[2:])
	case "uninstall":
		err = uninstallCmd(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "evalflow:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: evalflow COMMAND [flags]
  run        bring evalflow up here, evaluate a model, show progress and scores
  up         bring evalflow up here and serve until interrupted
  submit     start a run on a running evalflow and follow it (--api URL, $EVALFLOW_TOKEN)
  status     where runs are
  list       the caller's runs, newest first
  cancel     cancel runs
  results    a run's results.json and samples.jsonl into a folder
  compare    runs side by side, task by task, with a significance test
  tasks      what a run may name: datasets, lm-eval's tasks and groups (--expand: each group's tasks)
  deadletters  events Triggers could not deliver (an operator's: all; a caller's: its runs')
  install    put a release manifest (make release) on a Knative cluster: -f evalflow.yaml
  uninstall  take it off again, keeping the runs' data unless -delete-data
  publish-data, function NAME   (used by make node-up and the stack)
evalflow COMMAND -h shows a command's flags.`)
	os.Exit(2)
}

// serveFunction serves one function with func-go, as its generated main would.
func serveFunction(name string) error {
	switch name {
	case "start":
		return fhttp.Start(start.New())
	case "verify":
		return fhttp.Start(verify.New())
	case "deploy":
		return fhttp.Start(deploy.New())
	case "job-watch":
		return fhttp.Start(jobwatch.New())
	case "artifact":
		return fhttp.Start(artifact.New())
	}
	return fmt.Errorf("no function %q (have %v)", name, stack.Functions)
}

// stackFlags registers the flags that configure the stack.
func stackFlags(fs *flag.FlagSet) func() (stack.Config, error) {
	state := fs.String("state", ".state", "directory for Redis, jobs, results, the OCI layout and logs")
	triggers := fs.String("triggers", "", "a directory of Trigger manifests to route by instead of the project's (built in)")
	eventingDir := fs.String("eventing", "", "a directory of Knative Eventing manifests (config-features.yaml, PingSources) instead of the project's (built in)")
	data := fs.String("data", "../shared/datasets", "the datasets directory")
	redisAddr := fs.String("redis", "", "use this Redis instead of starting redis-server")
	port := fs.Int("port", 0, "the API's port (0: a free one)")
	registry := fs.String("registry", os.Getenv("EVALFLOW_REGISTRY"), "push results to HOST:PORT/REPO instead of the OCI layout")
	plainHTTP := fs.Bool("plain-http", false, "talk to the registry over plain HTTP")
	logLevel := fs.String("log-level", "info", "functions' log level")
	tokens := fs.String("tokens", os.Getenv("EVALFLOW_TOKENS_FILE"), "the callers' tokens file (TOKEN CALLER a line; * is an operator); default: STATE/tokens, made with an operator token")
	return func() (stack.Config, error) {
		exe, err := os.Executable()
		if err != nil {
			return stack.Config{}, err
		}
		runner, err := stack.LookRunner(exe)
		if err != nil {
			return stack.Config{}, fmt.Errorf("evalflow-runner not found beside %s or on PATH", exe)
		}
		abs := func(p string) string { a, _ := filepath.Abs(p); return a }
		cfg := stack.Config{StateDir: abs(*state), DataDir: abs(*data),
			Executable: exe, RunnerPath: runner, Commands: stack.LookCommands(exe), RedisAddr: *redisAddr, APIPort: *port, LogLevel: *logLevel,
			Log: evalflow.NewLogger("warn")}
		if *tokens != "" {
			cfg.TokensFile = abs(*tokens)
		}
		if *triggers != "" {
			cfg.Triggers = os.DirFS(abs(*triggers))
		}
		if *eventingDir != "" {
			cfg.Eventing = os.DirFS(abs(*eventingDir))
		}
		cfg.OCI.Registry, cfg.OCI.PlainHTTP = *registry, *plainHTTP
		cfg.OCI.Username, cfg.OCI.Password = os.Getenv("EVALFLOW_REGISTRY_USERNAME"), os.Getenv("EVALFLOW_REGISTRY_PASSWORD")
		return cfg, nil
	}
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	config := stackFlags(fs)
	_ = fs.Parse(args)
	cfg, err := config()
	if err != nil {
		return err
	}
	s, err := stack.Up(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Down()
	slog.Info("evalflow is up", "api", s.API, "broker", s.Broker, "redis", s.Redis, "state", cfg.StateDir)
	fmt.Printf("evalflow API: %s  (POST /evals/start, GET /evals/{id}); Ctrl-C stops\n", s.API)
	if s.OperatorToken != "" {
		fmt.Printf("results page: %s/ui/?token=%s\n", s.API, s.OperatorToken)
		fmt.Printf("operator token (in %s): %s\n  curl -H 'Authorization: Bearer %s' %s/evals\n",
			filepath.Join(cfg.StateDir, "tokens"), s.OperatorToken, s.OperatorToken, s.API)
		fmt.Printf("  EVALFLOW_API=%s EVALFLOW_TOKEN=%s evalflow list\n", s.API, s.OperatorToken)
	} else {
		fmt.Printf("callers' tokens: %s\n", cfg.TokensFile)
	}
	<-ctx.Done()
	return nil
}
