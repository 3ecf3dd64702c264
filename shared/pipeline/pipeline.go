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
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/cloudevents/sdk-go/v2/event"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/moby/locker"
	"github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-envconfig"

	evalflow "github.com/evalflow/evalflow/shared"
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
	// DeliveryToken, when set, is the bearer token the broker delivers with (local
	// mode's): a step takes an event only with it (Deliver).
	DeliveryToken string `env:"EVALFLOW_DELIVERY_TOKEN"`
	LogLevel      string `env:"LOG_LEVEL, default=info"`
	// JobImages is the registry prefix (HOST[:PORT]/PATH) Kubernetes Jobs pull the
	// engines' images from, instead of the names the engine registry gives (make
	// images pushes them there; make node-up to the node's registry).
	JobImages string `env:"EVALFLOW_JOB_IMAGES"`
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
	// deliveryToken is Config's DeliveryToken.
	deliveryToken string
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
}

// Open builds the Env of step from cfg.
func Open(ctx context.Context, step evalflow.StepID, cfg map[string]string) (*Env, error) {
	var c Config
	if err := Load(ctx, cfg, &c); err != nil {
		return nil, fmt.Errorf("%s: config: %w", step, err)
	}
	var resources map[string]engines.Resources
	if c.JobResources != "" {
		if err := json.Unmarshal([]byte(c.JobResources), &resources); err != nil {
			return nil, fmt.Errorf("%s: config EVALFLOW_JOB_RESOURCES: %w", step, err)
		}
	}
	opts := kube.Options{Images: c.JobImages, StuckAfter: c.StuckAfter, Resources: resources}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("%s: config EVALFLOW_JOB_RESOURCES: %w", step, err)
	}
	network, err := netpolicy.Parse(c.BaseURLAllow, c.BaseURLDeny)
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", step, err)
	}
	var own *kube.Cluster
	if c.OwnCluster != "" {
		var err error
		if own, err = kube.Own(c.OwnCluster, c.JobNamespace, opts); err != nil {
			return nil, fmt.Errorf("%s: config EVALFLOW_OWN_CLUSTER: %w", step, err)
		}
	}
	key, err := seal.ParseKey(c.SealKey)
	if err != nil {
		return nil, fmt.Errorf("%s: config EVALFLOW_SEAL_KEY: %w", step, err)
	}
	sealer, err := seal.New(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	var sinkClient *http.Client
	if c.SinkToken != "" {
		sinkClient = cloudevent.Bearer(c.SinkToken)
	}
	sender, err := cloudevent.NewSender(c.Sink, sinkClient)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr, Password: c.RedisPassword})
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("%s: redis at %s: %w", step, c.RedisAddr, err)
	}
	store := runstore.New(rdb, sealer)
	m := metrics.NewStep(string(step), func(ctx context.Context) (map[string]float64, float64, error) {
		counts, waiting, err := store.Counts(ctx)
		runs := make(map[string]float64, len(counts))
		for st, n := range counts {
			runs[string(st)] = float64(n)
		}
		return runs, float64(waiting), err
	})
	m.CountRoundTrips(func() float64 { return float64(store.RoundTrips()) })
	stopTracing, err := tracing.Setup(ctx, "evalflow-"+string(step), c.OTLPEndpoint)
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("%s: tracing: %w", step, err)
	}
	stopMetrics := func() {}
	if c.MetricsAddress != "" {
		if stopMetrics, err = m.Serve(c.MetricsAddress); err != nil {
			rdb.Close()
			return nil, fmt.Errorf("%s: metrics on %s: %w", step, c.MetricsAddress, err)
		}
	}
	announced, _ := lru.New[string, struct{}](4096) // only a size under 1 fails
	return &Env{Step: step, Store: store, announced: announced, turns: locker.New(), deliveryToken: c.DeliveryToken, Events: sender, Metrics: m, stopMetrics: stopMetrics,
		OTLPEndpoint: c.OTLPEndpoint, stopTracing: stopTracing,
		Log: evalflow.NewLogger(c.LogLevel).With("step", string(step)), Now: time.Now, Network: network, rdb: rdb, sealer: sealer,
		clusters: kube.Pool{Options: opts}, own: own}, nil
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

// subject is the run an event is about: its id, and the run as the event's sender last
// stored it, when the event carries it (evalflow.RunRef).
type subject struct {
	ID     string
	stored []byte
}

// subjectOf reads the run an event is about from its payload. A bad payload, or an event
// not signed for that run as its type requires (a step's by Sign, a job's report with
// its run's report key), is logged and reported as an empty subject: dropped, not
// redelivered forever.
func (e *Env) subjectOf(ev event.Event) subject {
	var ref evalflow.RunRef
	if err := cloudevent.Decode(ev, &ref); err != nil || ref.RunID == "" {
		e.Log.Error("event without a run id dropped", "type", ev.Type(), "id", ev.ID(), "error", err)
		return subject{}
	}
	if !e.signedFor(ev, ref.RunID) {
		e.Metrics.Unsigned.Inc()
		e.Log.Warn("event not signed for its run dropped", "run_id", ref.RunID, "type", ev.Type(), "id", ev.ID(), "source", ev.Source())
		return subject{}
	}
	return subject{ID: ref.RunID, stored: ref.Stored}
}

// begin moves run ref into status (the status the step works in) and notifies the
// caller that the step started; opts add to the write that moves it (and to the read,
// where there is one: runstore.Admitting), and withSecrets reads the run's secrets in
// the same round trip. ok is false when there is nothing to do: the run does not
// exist, has ended, or is already past this step (a duplicate or late event). A run
// already in status is returned with ok: the step redoes its idempotent work.
//
// The move is written over the copy of the run the event carries, when it does and
// the run is still so: one round trip. The notification goes out once the run has
// moved; one that cannot be sent fails begin, and the redelivery, finding the run in
// status, sends it again. Its id derives from the run and step, so one sent twice is
// one to the caller.
func (e *Env) begin(ctx context.Context, ref subject, status evalflow.Status, withSecrets bool, opts []runstore.UpdateOption) (*evalflow.Run, map[string]string, bool, error) {
	r, secrets, err := e.base(ctx, ref, status, withSecrets, opts)
	if errors.Is(err, evalflow.ErrNotFound) {
		e.Log.Warn("event for an unknown run dropped", "run_id", ref.ID)
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, err
	}
	if r.Status == status {
		return e.redo(ctx, r, secrets)
	}
	now := e.Now()
	var started event.Event
	if withSecrets {
		opts = append(opts, runstore.WithSecrets(&secrets))
	}
	moved, err := e.Store.UpdateRun(ctx, r, func(r *evalflow.Run) error { return r.Advance(status, now) },
		append(opts, runstore.Recording(func(r *evalflow.Run) evalflow.TimelineEntry {
			var entry evalflow.TimelineEntry
			started, entry = e.Note(r, evalflow.NoteStarted, "")
			return entry
		}))...)
	switch {
	case errors.Is(err, evalflow.ErrNotFound):
		return nil, nil, false, nil
	case errors.Is(err, evalflow.ErrStale) && moved.Status == status: // a copy of the event moved it meanwhile
		if withSecrets {
			if moved, secrets, err = e.Store.GetWithSecrets(ctx, ref.ID, opts...); err != nil {
				return nil, nil, false, err
			}
		}
		return e.redo(ctx, moved, secrets)
	case errors.Is(err, evalflow.ErrOutOfTurn):
		e.Metrics.Dropped.WithLabelValues(string(status)).Inc()
		e.Log.Warn("event out of turn dropped: it would skip a step", "run_id", ref.ID, "run_status", moved.Status, "to", status)
		return moved, nil, false, nil
	case errors.Is(err, evalflow.ErrStale):
		e.Metrics.Dropped.WithLabelValues(string(status)).Inc()
		e.Log.Info("duplicate or late event dropped", "run_id", ref.ID, "run_status", moved.Status)
		return moved, nil, false, nil
	case err != nil:
		return nil, nil, false, err
	}
	if err := e.announce(ctx, started); err != nil {
		return nil, nil, false, err
	}
	return moved, secrets, true, nil
}

// base is the run ref as the step moves it from: the copy the event carries, if it
// is of a run the step may move; the step's own recent copy of a run it moved already
// (its later events: job-watch's reports); else the run as stored, read (with its
// secrets, and opts). Only a run read is taken as it is: a copy serves as what an
// update writes over if the run is still so.
func (e *Env) base(ctx context.Context, ref subject, status evalflow.Status, withSecrets bool, opts []runstore.UpdateOption) (*evalflow.Run, map[string]string, error) {
	if ref.stored != nil {
		if r, err := runstore.Decode(ref.ID, ref.stored); err == nil && r.Status != status {
			if next := *r; next.Advance(status, e.Now()) == nil {
				return r, nil, nil
			}
		}
	}
	if cached, hit := e.Store.Recent(ref.ID); hit && !withSecrets && cached.Status == status {
		return cached, nil, nil
	}
	if withSecrets {
		return e.Store.GetWithSecrets(ctx, ref.ID, opts...)
	}
	r, err := e.Store.Get(ctx, ref.ID)
	return r, nil, err
}

// redo hands back run r, which is in the step's status already (an event redelivered
// while the step was at work, or the step's later event of the run), for the step to
// redo its idempotent work; a started notification this process has not sent (the
// send failed, or another process moved the run) is sent again.
func (e *Env) redo(ctx context.Context, r *evalflow.Run, secrets map[string]string) (*evalflow.Run, map[string]string, bool, error) {
	e.Metrics.Redeliveries.WithLabelValues(string(r.Status)).Inc()
	started, _ := e.Note(r, evalflow.NoteStarted, "")
	if !e.announced.Contains(started.ID()) {
		if err := e.announce(ctx, started); err != nil {
			return nil, nil, false, err
		}
	}
	return r, secrets, true, nil
}

// announce sends a step's started notification, and remembers it sent.
func (e *Env) announce(ctx context.Context, started event.Event) error {
	if err := e.Events.Send(ctx, started); err != nil {
		return fmt.Errorf("%s: notify run %s: %w", e.Step, started.Subject(), err)
	}
	e.announced.Add(started.ID(), struct{}{})
	return nil
}

// Note is the step's notification of status on run r: the event to send, and the
// timeline entry it is kept as.
func (e *Env) Note(r *evalflow.Run, status, message string) (event.Event, evalflow.TimelineEntry) {
	n := evalflow.Notify(r, e.Step, status, message)
	ev := cloudevent.Notification(r, n)
	return ev, evalflow.TimelineEntry{ID: ev.ID(), Time: ev.Time(), Notification: n}
}

// Notify tells run r's caller that the step reached status, and keeps it in the run's
// history (its timeline: once per notification, however often the step is redone).
func (e *Env) Notify(ctx context.Context, r *evalflow.Run, status, message string) error {
	ev, entry := e.Note(r, status, message)
	if err := e.Store.Record(ctx, r.ID, entry); err != nil {
		return fmt.Errorf("%s: notify run %s: %w", e.Step, r.ID, err)
	}
	if err := e.Events.Send(ctx, ev); err != nil {
		return fmt.Errorf("%s: notify run %s: %w", e.Step, r.ID, err)
	}
	return nil
}

// Change applies change to run r as it was read (runstore.Store.UpdateRun) and keeps
// the step's notification of status in the run's history in the same write, then
// tells the caller. It returns what UpdateRun returns (evalflow.ErrStale: nothing
// written, nothing sent). A change that ends a run holding a job slot hands the slot
// to the first run in line, and lets that run in (run.verified, to deploy).
func (e *Env) Change(ctx context.Context, r *evalflow.Run, change func(*evalflow.Run) error, status, message string) (*evalflow.Run, error) {
	var ev event.Event
	var handed string
	next, err := e.Store.UpdateRun(ctx, r, change, runstore.HandingOver(&handed), runstore.Recording(func(r *evalflow.Run) evalflow.TimelineEntry {
		var entry evalflow.TimelineEntry
		ev, entry = e.Note(r, status, message)
		return entry
	}))
	if err != nil {
		return next, err
	}
	if err := e.Events.Send(ctx, ev); err != nil {
		return nil, fmt.Errorf("%s: notify run %s: %w", e.Step, r.ID, err)
	}
	if handed != "" {
		// Lost, it is sent again by the stalled-run driver: the run holds its slot.
		if err := e.Events.Send(ctx, *e.Next(evalflow.TypeVerified, handed)); err != nil {
			e.Log.Warn("a run handed a job slot was not let in", "run_id", handed, "after", r.ID, "error", err)
		}
	}
	return next, nil
}

// Fail ends run id as failed with message, notifies the caller and returns the
// run.failed event to reply with. A run that has already ended is left as it is, and
// no event is returned. The message may quote what the endpoint or a job said: the
// run's secrets are redacted from it before it is logged, stored or sent.
func (e *Env) Fail(ctx context.Context, id, message string) (*event.Event, error) {
	r, secrets, err := e.Store.GetWithSecrets(ctx, id)
	if errors.Is(err, evalflow.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: fail run %s: %w", e.Step, id, err)
	}
	message = evalflow.Redact(message, slices.Collect(maps.Values(secrets))...)
	e.Log.Error("run failed", "run_id", id, "reason", message)
	r, err = e.Change(ctx, r, func(r *evalflow.Run) error { return r.Fail(message, e.Now()) }, evalflow.NoteFailed, message)
	if errors.Is(err, evalflow.ErrStale) || errors.Is(err, evalflow.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e.Next(evalflow.TypeFailed, r.ID), nil
}

// Settle ends a step that failed at what with err: a run that can never succeed (err
// is evalflow.ErrPermanent) is failed, saying what failed and why, and the step replies
// run.failed; any other error is returned, wrapped with what and the run, for the
// broker to redeliver the event. It is the one place a step decides "fail or retry".
func (e *Env) Settle(ctx context.Context, id, what string, err error) (*event.Event, error) {
	if errors.Is(err, evalflow.ErrPermanent) {
		return e.Fail(ctx, id, fmt.Sprintf("%s: %s: %v", e.Step, what, err))
	}
	return nil, fmt.Errorf("%s: %s (run %s): %w", e.Step, what, id, err)
}

// Next returns the event a step replies with to move run id on. It carries the run
// as the step last stored it, for the next step to write its move over (Turn).
func (e *Env) Next(typ evalflow.EventType, id string) *event.Event {
	stored, _ := e.Store.Stored(id)
	ev := cloudevent.New(e.Step, typ, id, evalflow.RunRef{RunID: id, Stored: stored})
	e.Sign(&ev, id)
	return &ev
}

// Cluster connects to the cluster of Kubernetes run: with the run's kubeconfig, or
// evalflow's own (Run.OwnCluster). A kubeconfig it cannot use is kube.ErrBadKubeconfig,
// and evalflow.ErrPermanent.
func (e *Env) Cluster(ctx context.Context, run *evalflow.Run) (*kube.Cluster, error) {
	kubeconfig := ""
	if !run.OwnCluster {
		var err error
		if kubeconfig, err = e.Store.Secret(ctx, run.ID, runstore.SecretKubeconfig); err != nil {
			return nil, err
		}
	}
	return e.ClusterOf(run, kubeconfig)
}

// ClusterOf connects to run's cluster: evalflow's own (Run.OwnCluster), or the one
// of its kubeconfig, read already (with the run's other secrets, Store.Secrets).
func (e *Env) ClusterOf(run *evalflow.Run, kubeconfig string) (*kube.Cluster, error) {
	switch {
	case run.OwnCluster && e.own == nil:
		return nil, evalflow.Permanent(fmt.Errorf("run %s runs in evalflow's own cluster, and this deployment has none (EVALFLOW_OWN_CLUSTER)", run.ID))
	case run.OwnCluster:
		return e.own, nil
	case kubeconfig == "":
		return nil, fmt.Errorf("%w: run %s has none (any more)", kube.ErrBadKubeconfig, run.ID)
	}
	return e.clusters.Connect([]byte(kubeconfig))
}

// OwnCluster reports whether the deployment has a cluster of its own, where runs
// without a kubeconfig run their Jobs.
func (e *Env) OwnCluster() bool { return e.own != nil }

// Within tries op, again with exponential backoff while it fails, until it succeeds,
// fails permanently (evalflow.ErrPermanent), or d has passed. What still fails after
// d is permanent too: a step that waited d for what its run needs (a cluster, an
// endpoint) fails the run with the reason rather than hold it.
func Within(ctx context.Context, d time.Duration, op func(context.Context) error) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := op(ctx)
		if errors.Is(err, evalflow.ErrPermanent) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(d))
	if err != nil && !errors.Is(err, evalflow.ErrPermanent) {
		return evalflow.Permanent(err)
	}
	return err
}
