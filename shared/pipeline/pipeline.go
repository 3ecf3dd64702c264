// Package pipeline holds what every step function uses: configuration from the
// environment, the run store, the event sender that reaches the broker, a JSON logger,
// and the moves every step makes (begin, notify, fail).
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/moby/locker"
	"github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-envconfig"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/engines"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/metrics"
	"github.com/evalflow/evalflow/shared/netpolicy"
	"github.com/evalflow/evalflow/shared/runstore"
	"github.com/evalflow/evalflow/shared/seal"
	"github.com/evalflow/evalflow/shared/tracing"
)

// Config is what every step reads from its environment.
type Config struct {
	RedisAddr     string `env:"REDIS_ADDR, default=127.0.0.1:6379"`
	RedisPassword string `env:"REDIS_PASSWORD"`
	// SealKey (base64, 32 bytes) seals secrets at rest.
	SealKey string `env:"EVALFLOW_SEAL_KEY, required"`
	// Sink is the broker's ingress, where notifications and out-of-band events go;
	// SinkToken the bearer token it asks for, if it does (local mode's broker).
	Sink      string `env:"K_SINK, required"`
	SinkToken string `env:"EVALFLOW_BROKER_TOKEN"`
	// SinkTokenFile is where a token the broker asks for is renewed (Knative's OIDC:
	// the SinkBinding's /oidc/token), read at each send; absent, none is sent.
	SinkTokenFile string `env:"EVALFLOW_BROKER_TOKEN_FILE"`
	// DeliveryToken, when set, is the bearer token the broker delivers with (local
	// mode's): a step takes an event only with it (Deliver).
	DeliveryToken string `env:"EVALFLOW_DELIVERY_TOKEN"`
	// DeliveryAudience, when set, is the step's audience in Knative Eventing's OIDC
	// authentication (its Triggers' subscriber.audience): a step takes an event only
	// with a token evalflow's own cluster (OwnCluster) authenticates for it, of one of
	// the Triggers of its namespace (kube.Deliveries).
	DeliveryAudience string `env:"EVALFLOW_DELIVERY_AUDIENCE"`
	LogLevel         string `env:"LOG_LEVEL, default=info"`
	// JobImages is the registry prefix (HOST[:PORT]/PATH) Kubernetes Jobs pull the
	// engines' images from, instead of the names the engine registry gives (make
	// images pushes them there; make node-up to the node's registry).
	JobImages string `env:"EVALFLOW_JOB_IMAGES"`
	// JobImageDigests pins JobImages' images by digest, NAME@sha256:HEX,… (a release
	// manifest's, make release).
	JobImageDigests string `env:"EVALFLOW_JOB_IMAGE_DIGESTS"`
	// StuckAfter is how long a Job's pod may wait for its image or a node before
	// job-watch fails its run with the pod's reason.
	StuckAfter time.Duration `env:"EVALFLOW_STUCK_AFTER, default=2m"`
	// JobResources are the deployment's own requests and limits for Jobs, as JSON by
	// engine: {"evalflow": {"cpu": "500m", "memory": "128Mi", "memory_limit": "1Gi"}}.
	JobResources string `env:"EVALFLOW_JOB_RESOURCES"`
	// OwnCluster is evalflow's own cluster, where a run without a kubeconfig runs
	// its Job: "in-cluster" (the function's ServiceAccount, as eventing/rbac.yaml
	// grants it) or an operator's kubeconfig file. Empty: such runs are local
	// processes (local mode). JobNamespace is where those Jobs go (default: the
	// ServiceAccount's namespace, or the kubeconfig's).
	OwnCluster   string `env:"EVALFLOW_OWN_CLUSTER"`
	JobNamespace string `env:"EVALFLOW_JOB_NAMESPACE"`
	// TickOnDemand has job-watch's tick (evalflow.Tick) exist only while runs are in
	// flight, in evalflow's own cluster (OwnCluster), in the namespace of its
	// ServiceAccount or kubeconfig: start makes it, job-watch removes it when idle.
	// False: it is always there (local mode's broker plays it).
	TickOnDemand bool `env:"EVALFLOW_TICK_ON_DEMAND, default=false"`
	// BaseURLAllow and BaseURLDeny are the operator's additions to what a run's
	// base_url may reach (netpolicy.Parse).
	BaseURLAllow string `env:"EVALFLOW_BASE_URL_ALLOW"`
	BaseURLDeny  string `env:"EVALFLOW_BASE_URL_DENY"`
	// MetricsAddress is where the step serves /metrics besides its own port ("":
	// nowhere else; start serves them on its API too).
	MetricsAddress string `env:"METRICS_ADDRESS"`
	// OTLPEndpoint is where spans go (OTLP over HTTP, http://HOST:PORT); "" exports
	// none, and trace contexts still travel with the events.
	OTLPEndpoint string `env:"OTEL_EXPORTER_OTLP_ENDPOINT"`
}

// Load fills target (a pointer to a struct with env tags) from cfg, the map func-go
// hands to Start (the environment plus ./cfg).
func Load(ctx context.Context, cfg map[string]string, target any) error {
	return envconfig.ProcessWith(ctx, &envconfig.Config{Target: target, Lookuper: envconfig.MapLookuper(cfg)})
}

// Env is a step's connection to the rest of evalflow.
type Env struct {
	Step   evalflow.StepID
	Store  *runstore.Store
	Events *cloudevent.Sender
	Log    *slog.Logger
	Now    func() time.Time
	// Network is what a run's base_url may reach.
	Network *netpolicy.Policy
	// Metrics are the step's Prometheus metrics.
	Metrics     *metrics.Step
	stopMetrics func()
	// OTLPEndpoint is Config's, for the jobs' runners.
	OTLPEndpoint string
	stopTracing  func(context.Context) error
	// deliveries tells the broker's deliveries from other requests (Config's
	// DeliveryToken or DeliveryAudience); nil takes every request as one (a step run
	// alone, in development).
	deliveries auth.Deliveries
	// turns serialises the turns of one run (OneAtATime).
	turns *locker.Locker
	// announced are the started notifications this process has sent (by id).
	announced *lru.Cache[string, struct{}]
	rdb       *redis.Client
	sealer    *seal.Sealer
	// clusters keeps one client per cluster reached (see Cluster); own is
	// evalflow's own cluster (Config.OwnCluster), nil where it has none.
	clusters kube.Pool
	own      *kube.Cluster
	// ticker is job-watch's tick, made and removed on demand (Config.TickOnDemand);
	// nil where it is always there.
	ticker *kube.Ticker
	// tickRemoved, in tests, runs between StopTickingIfIdle's removal and its second look.
	tickRemoved func()
}

// Open builds the Env of step from cfg.
func Open(ctx context.Context, step evalflow.StepID, cfg map[string]string) (*Env, error) {
	var c Config
	if err := Load(ctx, cfg, &c); err != nil {
		return nil, fmt.Errorf("%s: config: %w", step, err)
	}
	e := &Env{Step: step, Now: time.Now, turns: locker.New(), OTLPEndpoint: c.OTLPEndpoint,
		Log: evalflow.NewLogger(c.LogLevel).With("step", string(step), "version", evalflow.Version)}
	e.announced, _ = lru.New[string, struct{}](4096) // only a size under 1 fails
	if err := e.openClusters(c); err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	if err := e.openStore(ctx, c); err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	if err := e.openTelemetry(ctx, c); err != nil {
		e.rdb.Close()
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	return e, nil
}

// openClusters reads what a step needs to reach clusters and endpoints: the Jobs'
// options, the base_url policy, evalflow's own cluster.
func (e *Env) openClusters(c Config) error {
	var resources map[string]engines.Resources
	if c.JobResources != "" {
		if err := json.Unmarshal([]byte(c.JobResources), &resources); err != nil {
			return fmt.Errorf("config EVALFLOW_JOB_RESOURCES: %w", err)
		}
	}
	digests, err := engines.ParseDigests(c.JobImageDigests)
	if err != nil {
		return fmt.Errorf("config EVALFLOW_JOB_IMAGE_DIGESTS: %w", err)
	}
	opts := kube.Options{Images: c.JobImages, Digests: digests, StuckAfter: c.StuckAfter, Resources: resources}
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("config EVALFLOW_JOB_RESOURCES: %w", err)
	}
	e.clusters = kube.Pool{Options: opts}
	if e.Network, err = netpolicy.Parse(c.BaseURLAllow, c.BaseURLDeny); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.OwnCluster != "" {
		if e.own, err = kube.Own(c.OwnCluster, c.JobNamespace, opts); err != nil {
			return fmt.Errorf("config EVALFLOW_OWN_CLUSTER: %w", err)
		}
	}
	switch {
	case c.DeliveryAudience != "" && c.DeliveryToken != "":
		return errors.New("config EVALFLOW_DELIVERY_AUDIENCE: the broker delivers with Kubernetes tokens or with EVALFLOW_DELIVERY_TOKEN, not both")
	case c.DeliveryAudience != "":
		if c.OwnCluster == "" {
			return errors.New("config EVALFLOW_DELIVERY_AUDIENCE: deliveries' tokens are reviewed by evalflow's own cluster, and EVALFLOW_OWN_CLUSTER names none")
		}
		if e.deliveries, err = kube.OwnDeliveries(c.OwnCluster, c.DeliveryAudience); err != nil {
			return fmt.Errorf("config EVALFLOW_DELIVERY_AUDIENCE: %w", err)
		}
	case c.DeliveryToken != "":
		e.deliveries = auth.SharedToken(c.DeliveryToken)
	}
	if c.TickOnDemand {
		if c.OwnCluster == "" {
			return errors.New("config EVALFLOW_TICK_ON_DEMAND: the tick is made in evalflow's own cluster, and EVALFLOW_OWN_CLUSTER names none")
		}
		if e.ticker, err = kube.OwnTicker(c.OwnCluster, evalflow.Tick); err != nil {
			return fmt.Errorf("config EVALFLOW_TICK_ON_DEMAND: %w", err)
		}
	}
	return nil
}

// openStore connects to Redis (the run store, its secrets sealed with the seal key)
// and to the broker.
func (e *Env) openStore(ctx context.Context, c Config) error {
	key, err := seal.ParseKey(c.SealKey)
	if err != nil {
		return fmt.Errorf("config EVALFLOW_SEAL_KEY: %w", err)
	}
	if e.sealer, err = seal.New(key); err != nil {
		return err
	}
	var sinkClient *http.Client
	switch {
	case c.SinkToken != "" && c.SinkTokenFile != "":
		return errors.New("config EVALFLOW_BROKER_TOKEN_FILE: the broker asks for one token, and EVALFLOW_BROKER_TOKEN gives another")
	case c.SinkToken != "":
		sinkClient = cloudevent.Bearer(c.SinkToken)
	case c.SinkTokenFile != "":
		sinkClient = cloudevent.BearerFile(c.SinkTokenFile)
	}
	if e.Events, err = cloudevent.NewSender(c.Sink, sinkClient); err != nil {
		return err
	}
	e.rdb = redis.NewClient(&redis.Options{Addr: c.RedisAddr, Password: c.RedisPassword})
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		e.rdb.Close()
		return fmt.Errorf("redis at %s: %w", c.RedisAddr, err)
	}
	e.Store = runstore.New(e.rdb, e.sealer)
	return nil
}

// openTelemetry makes the step's metrics (served at c.MetricsAddress, if set) and
// its tracing.
func (e *Env) openTelemetry(ctx context.Context, c Config) error {
	store := e.Store
	e.Metrics = metrics.NewStep(string(e.Step), func(ctx context.Context) (map[string]float64, float64, error) {
		counts, waiting, err := store.Counts(ctx)
		runs := make(map[string]float64, len(counts))
		for st, n := range counts {
			runs[string(st)] = float64(n)
		}
		return runs, float64(waiting), err
	})
	e.Metrics.CountRoundTrips(func() float64 { return float64(store.RoundTrips()) })
	var err error
	if e.stopTracing, err = tracing.Setup(ctx, "evalflow-"+string(e.Step), c.OTLPEndpoint); err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	e.stopMetrics = func() {}
	if c.MetricsAddress != "" {
		if e.stopMetrics, err = e.Metrics.Serve(c.MetricsAddress); err != nil {
			return fmt.Errorf("metrics on %s: %w", c.MetricsAddress, err)
		}
	}
	return nil
}

// ReportKey is the key run id's job signs its reports with (cloudevent.Sign), derived
// from the sealing key: deploy gives it to the job, job-watch checks reports with it.
func (e *Env) ReportKey(runID string) []byte { return e.sealer.Derive("job report", runID) }

// Sign signs ev, an event of run id's that a step sends, as evalflow's own: a step
// takes an event that moves a run only so signed (Turn). The key is derived for the run
// from the seal key, which only evalflow's functions hold: any other sender that can
// reach the broker or a function (a pod in the cluster, a job) cannot make one.
func (e *Env) Sign(ev *event.Event, id string) { cloudevent.Sign(ev, e.stepKey(id)) }

func (e *Env) stepKey(id string) []byte { return e.sealer.Derive("step event", id) }

// signedFor reports whether ev, about run id, is signed as its type requires: a job's
// report with the run's report key, any other event as a step signs it (Sign).
func (e *Env) signedFor(ev event.Event, id string) bool {
	if evalflow.JobReport(cloudevent.TypeOf(ev)) {
		return cloudevent.Verify(ev, e.ReportKey(id))
	}
	return cloudevent.Verify(ev, e.stepKey(id))
}

// handling starts the handling of event ev: a span in the run's trace (the child of
// the span that sent ev), and its timing. Call done with the handler's reply and
// error when it returns (ctx, done := e.handling(ctx, ev); defer done(&reply, &err)):
// the reply goes on in the same trace; an error is logged (the sender is told only to
// send the event again).
func (e *Env) handling(ctx context.Context, ev event.Event) (_ context.Context, done func(**event.Event, *error)) {
	began := time.Now()
	ctx, span := tracing.Start(cloudevent.Trace(ctx, ev), string(e.Step)+" "+ev.Type(), ev.Subject())
	return ctx, func(reply **event.Event, err *error) {
		outcome := "ok"
		if *err != nil {
			outcome = "error"
			e.Log.Error("event not handled; its sender is to send it again", "run_id", ev.Subject(),
				"type", ev.Type(), "id", ev.ID(), "error", *err)
		}
		if *reply != nil {
			cloudevent.SetTrace(ctx, *reply)
		}
		tracing.End(span, *err)
		e.Metrics.Handled.WithLabelValues(cloudevent.TypeOf(ev).Label(), outcome).Observe(time.Since(began).Seconds())
	}
}

// Close releases the Env's connections.
func (e *Env) Close() error {
	if e == nil {
		return nil
	}
	e.stopMetrics()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.stopTracing(ctx) // what spans are left go out
	return e.rdb.Close()
}

// Stop is func-go's stop hook: functions embed *Env and so close on stop.
func (e *Env) Stop(context.Context) error { return e.Close() }

// Ready reports whether Redis answers.
func (e *Env) Ready(ctx context.Context) (bool, error) {
	if e == nil { // asked before Start has connected
		return false, nil
	}
	if err := e.Store.Ping(ctx); err != nil {
		return false, err
	}
	return true, nil
}
