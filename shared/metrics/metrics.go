// Package metrics is evalflow's Prometheus metrics (client_golang), named by
// Prometheus's conventions (evalflow_ prefix, base units, _total counters). Each step
// serves its own on /metrics: start on its API, the CloudEvents steps on
// METRICS_ADDRESS (a port Prometheus scrapes on the pod; func-go serves nothing but
// events on the function's own). A job's runner serves its own while it runs, where
// its spec says.
package metrics

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Step is what a step function records.
type Step struct {
	reg    *prometheus.Registry
	labels prometheus.Labels
	// Handled times each event a step handled: by type and outcome (ok, error: to be
	// redelivered).
	Handled *prometheus.HistogramVec
	// Redeliveries counts events of a step already under way (its work redone), and
	// Dropped duplicate or late events of a step already past (nothing done).
	Redeliveries, Dropped *prometheus.CounterVec
	// Unsigned counts events not signed for their run as evalflow signs them (forged,
	// or sent by something that is not evalflow's); nothing done. No label: their type
	// is whatever the sender chose.
	Unsigned prometheus.Counter
	// DeadLetters counts events Triggers could not deliver, by type (job-watch).
	DeadLetters *prometheus.CounterVec
	// Requests counts start's API requests by route and status code.
	Requests *prometheus.CounterVec
}

// Gauges reads gauges at each scrape: the runs by status, the runs waiting for a job
// slot. It is given a short deadline.
type Gauges func(ctx context.Context) (runsByStatus map[string]float64, waiting float64, err error)

// NewStep returns the metrics of step, with the Go runtime's and the process's, and
// gauges read at each scrape when not nil.
func NewStep(step string, gauges Gauges) *Step {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	constLabels := prometheus.Labels{"step": step}
	s := &Step{
		reg: reg, labels: constLabels,
		Handled: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "evalflow_event_handling_seconds",
			Help: "Time a step took to handle an event, by event type and outcome (ok, error: redelivered).", ConstLabels: constLabels,
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"type", "outcome"}),
		Redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evalflow_redeliveries_total",
			Help: "Events of a step already under way (by the run status it works in): its work redone, idempotently.", ConstLabels: constLabels}, []string{"status"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evalflow_dropped_events_total",
			Help: "Duplicate or late events of a run already past the step (by the run status it works in): nothing done.", ConstLabels: constLabels}, []string{"status"}),
		Unsigned: prometheus.NewCounter(prometheus.CounterOpts{Name: "evalflow_unsigned_events_total",
			Help: "Events not signed for their run as evalflow signs them: nothing done.", ConstLabels: constLabels}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evalflow_dead_letters_total",
			Help: "Events Triggers could not deliver after their retries.", ConstLabels: constLabels}, []string{"type"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evalflow_api_requests_total",
			Help: "API requests, by route and status code.", ConstLabels: constLabels}, []string{"route", "code"}),
	}
	reg.MustRegister(s.Handled, s.Redeliveries, s.Dropped, s.Unsigned, s.DeadLetters, s.Requests)
	if gauges != nil {
		reg.MustRegister(gaugeCollector{read: gauges,
			runs:    prometheus.NewDesc("evalflow_runs", "Runs by status.", []string{"status"}, nil),
			waiting: prometheus.NewDesc("evalflow_queue_length", "Runs waiting for a job slot.", nil, nil)})
	}
	return s
}

// CountRoundTrips adds evalflow_redis_round_trips_total, read from count at each scrape.
func (s *Step) CountRoundTrips(count func() float64) {
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "evalflow_redis_round_trips_total",
		Help: "Round trips to Redis: a command, or a pipeline or transaction sent at once.", ConstLabels: s.labels}, count))
}

// Handler serves the metrics in Prometheus's text format.
func (s *Step) Handler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg})
}

// Serve serves the metrics on addr (/metrics) until stop.
func (s *Step) Serve(addr string) (stop func(), err error) { return serve(s.reg, addr) }

func serve(reg *prometheus.Registry, addr string) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() { _ = srv.Close() }, nil
}

type gaugeCollector struct {
	read          Gauges
	runs, waiting *prometheus.Desc
}

func (c gaugeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.runs; ch <- c.waiting }

func (c gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	runs, waiting, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.runs, err)
		return
	}
	for status, n := range runs {
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.GaugeValue, n, status)
	}
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, waiting)
}

// Runner is what an evaluation job records of its requests to the model.
type Runner struct {
	reg *prometheus.Registry
	// Requests counts attempts by outcome (ok, the HTTP status code, error), Retries
	// the attempts that retried one, Tokens the tokens answers counted (prompt,
	// completion); SamplesPerSecond is the rate of the latest progress report.
	Requests         *prometheus.CounterVec
	Retries          prometheus.Counter
	Tokens           *prometheus.CounterVec
	SamplesPerSecond prometheus.Gauge
}

// NewRunner returns a runner's metrics for run id.
func NewRunner(runID string) *Runner {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	l := prometheus.Labels{"run_id": runID}
	r := &Runner{reg: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evalflow_runner_requests_total",
			Help: "Attempts of requests to the model, by outcome (ok, the HTTP status code, error).", ConstLabels: l}, []string{"outcome"}),
		Retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "evalflow_runner_retries_total",
			Help: "Attempts that retried a failed one.", ConstLabels: l}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evalflow_runner_tokens_total",
			Help: "Tokens the model's answers counted, by kind (prompt, completion).", ConstLabels: l}, []string{"kind"}),
		SamplesPerSecond: prometheus.NewGauge(prometheus.GaugeOpts{Name: "evalflow_runner_samples_per_second",
			Help: "Samples scored a second, as of the latest progress report.", ConstLabels: l}),
	}
	reg.MustRegister(r.Requests, r.Retries, r.Tokens, r.SamplesPerSecond)
	return r
}

// Observe records an attempt (openai.Client's Observe).
func (r *Runner) Observe(outcome string, retry bool, prompt, completion int) {
	r.Requests.WithLabelValues(outcome).Inc()
	if retry {
		r.Retries.Inc()
	}
	r.Tokens.WithLabelValues("prompt").Add(float64(prompt))
	r.Tokens.WithLabelValues("completion").Add(float64(completion))
}

// Serve serves the metrics on addr (/metrics) until stop.
func (r *Runner) Serve(addr string) (stop func(), err error) { return serve(r.reg, addr) }
