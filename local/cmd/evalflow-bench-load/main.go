// Command evalflow-bench-load starts a burst of small runs against local mode and a
// fast scripted model server, and writes what happened to a Markdown file: every run
// accepted and ended, none lost or run twice, the time to drain the burst, the peak
// memory of evalflow's processes, Redis commands per run and step, and how many jobs
// ran at once against the deployment's job slots.
//
//	evalflow-bench-load -runs 1000 -max-jobs 8 -data ../shared/datasets -out docs/benchmarks-load.md
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/evalflow/evalflow/local/stack"
	evalflow "github.com/evalflow/evalflow/shared"
)

func main() {
	runs := flag.Int("runs", 1000, "runs started in one burst")
	maxJobs := flag.Int("max-jobs", 8, "the deployment's job slots (EVALFLOW_MAX_JOBS)")
	data := flag.String("data", "../shared/datasets", "datasets directory")
	out := flag.String("out", "docs/benchmarks-load.md", "the Markdown file written")
	flag.Parse()
	if err := run(*runs, *maxJobs, *data, *out); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-bench-load:", err)
		os.Exit(1)
	}
}

// result is what one burst showed.
type result struct {
	runs, maxJobs              int
	accepted, succeeded, ended int
	jobs                       int
	submit, drain              time.Duration
	peakRSS                    float64 // MiB, evalflow's processes
	mostJobs, mostWaiting      int
	commands                   int64
	commandsPerStep            float64
	tripsPerStep               float64
	tripsPerRun                map[string]float64 // by function
	tripsPerEvent              map[string]float64 // by function: per event or API request handled
	tripsPerHandled            float64
	handledPerRun              float64
	eventsPerRun               map[[2]string]float64 // by function and event type
}

func run(runs, maxJobs int, data, out string) error {
	ctx := context.Background()
	model := httptest.NewServer(scripted())
	defer model.Close()
	s, down, err := stack.ForBenchmark(ctx, data, "EVALFLOW_MAX_JOBS="+strconv.Itoa(maxJobs))
	if err != nil {
		return err
	}
	defer down()
	rdb := redis.NewClient(&redis.Options{Addr: s.Redis, Password: s.RedisPassword})
	defer rdb.Close()
	before, err := commandsProcessed(ctx, rdb)
	if err != nil {
		return err
	}
	tripsBefore, handledBefore, typesBefore, err := roundTrips(s)
	if err != nil {
		return err
	}

	res := result{runs: runs, maxJobs: maxJobs}
	watching, stop := context.WithCancel(ctx)
	var watch sync.WaitGroup
	watch.Go(func() { res.peakRSS, res.mostJobs, res.mostWaiting = observe(watching, s, rdb) })

	began := time.Now()
	ids, accepted := burst(s.API, s.OperatorToken, model.URL+"/v1", runs)
	res.submit, res.accepted = time.Since(began), accepted
	res.succeeded, res.ended, err = drain(ctx, rdb, ids, 15*time.Minute)
	res.drain = time.Since(began)
	stop()
	watch.Wait()
	if err != nil {
		return err
	}
	after, err := commandsProcessed(ctx, rdb)
	if err != nil {
		return err
	}
	tripsAfter, handledAfter, typesAfter, err := roundTrips(s)
	if err != nil {
		return err
	}
	res.jobs = s.JobsCreated()
	res.commands = after - before
	res.commandsPerStep = float64(res.commands) / float64(runs*len(evalflow.Steps))
	res.tripsPerRun, res.tripsPerEvent = map[string]float64{}, map[string]float64{}
	total, handled := 0.0, 0.0
	for name, after := range tripsAfter {
		trips, events := after-tripsBefore[name], handledAfter[name]-handledBefore[name]
		res.tripsPerRun[name], res.tripsPerEvent[name] = trips/float64(runs), trips/max(events, 1)
		total, handled = total+trips, handled+events
	}
	res.tripsPerStep = total / float64(runs*len(evalflow.Steps))
	res.eventsPerRun = map[[2]string]float64{}
	for k, after := range typesAfter {
		if n := after - typesBefore[k]; n > 0 {
			res.eventsPerRun[k] = n / float64(runs)
		}
	}
	res.tripsPerHandled, res.handledPerRun = total/max(handled, 1), handled/float64(runs)
	report := res.markdown()
	fmt.Print(report)
	return os.WriteFile(out, []byte(report), 0o644)
}

// scripted is an OpenAI-compatible server answering at once: it lists one model and
// answers every chat request "A" (a fast endpoint, so that what is measured is
// evalflow's orchestration).
func scripted() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"scripted","object":"model"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"c","object":"chat.completion","model":"scripted","choices":[{"index":0,"message":{"role":"assistant","content":"A"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}`)
	})
	return mux
}

// burst starts runs at once (64 callers at a time) and returns their ids and how many
// were accepted (202).
func burst(api, token, model string, runs int) ([]string, int) {
	ids := make([]string, runs)
	var accepted atomic.Int32
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Go(func() {
			for i := range next {
				ids[i] = uuid.NewString()
				zero := 0
				body, _ := json.Marshal(evalflow.Request{EvalRequestID: ids[i], ModelName: "scripted", BaseURL: model, Concurrency: 1,
					Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 1, NumFewshot: &zero}}})
				req, _ := http.NewRequest(http.MethodPost, api+"/evals/start", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					if resp.StatusCode == http.StatusAccepted {
						accepted.Add(1)
					}
					resp.Body.Close()
				}
			}
		})
	}
	for i := range runs {
		next <- i
	}
	close(next)
	wg.Wait()
	return ids, int(accepted.Load())
}

// drain waits until every run has ended, and counts those that succeeded.
func drain(ctx context.Context, rdb *redis.Client, ids []string, within time.Duration) (succeeded, ended int, err error) {
	deadline := time.Now().Add(within)
	for {
		succeeded, ended = 0, 0
		for i := 0; i < len(ids); i += 200 {
			keys := make([]string, 0, 200)
			for _, id := range ids[i:min(i+200, len(ids))] {
				keys = append(keys, "evalflow:run:"+id)
			}
			vals, err := rdb.MGet(ctx, keys...).Result()
			if err != nil {
				return 0, 0, err
			}
			for _, v := range vals {
				str, _ := v.(string)
				var r evalflow.Run
				if json.Unmarshal([]byte(str), &r) == nil && r.Status.Terminal() {
					ended++
					if r.Status == evalflow.StatusSucceeded {
						succeeded++
					}
				}
			}
		}
		if ended == len(ids) {
			return succeeded, ended, nil
		}
		if time.Now().After(deadline) {
			return succeeded, ended, fmt.Errorf("%d of %d runs ended within %s", ended, len(ids), within)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// observe samples, until ctx ends, the resident memory of evalflow's processes (this
// one: the broker and the job runtime; Redis; each function), the jobs running and
// the runs waiting, and returns their peaks.
func observe(ctx context.Context, s *stack.Stack, rdb *redis.Client) (peakMiB float64, mostJobs, mostWaiting int) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return peakMiB, mostJobs, mostWaiting
		case <-tick.C:
		}
		total := rss(os.Getpid())
		for _, name := range append([]string{"redis"}, stack.Functions...) {
			total += rss(s.PID(name))
		}
		peakMiB = max(peakMiB, total)
		mostJobs = max(mostJobs, s.JobsRunning())
		if n, err := rdb.ZCard(ctx, "evalflow:jobs:queue").Result(); err == nil {
			mostWaiting = max(mostWaiting, int(n))
		}
	}
}

// rss is a process's resident memory in MiB (0 when it cannot be read).
func rss(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// roundTrips is each function's evalflow_redis_round_trips_total, as scraped now, and
// how many events (evalflow_event_handling_seconds_count) and API requests
// (evalflow_api_requests_total) it has handled, in all and by function and event type.
func roundTrips(s *stack.Stack) (trips, handled map[string]float64, byType map[[2]string]float64, err error) {
	out, handled, byType := map[string]float64{}, map[string]float64{}, map[[2]string]float64{}
	for _, name := range stack.Functions {
		resp, err := http.Get(s.Metrics[name])
		if err != nil {
			return nil, nil, nil, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, nil, nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			switch {
			case strings.HasPrefix(line, "evalflow_redis_round_trips_total{"):
				out[name] += v
			case strings.HasPrefix(line, "evalflow_event_handling_seconds_count{"):
				handled[name] += v
				if _, rest, ok := strings.Cut(line, `type="`); ok {
					typ, _, _ := strings.Cut(rest, `"`)
					byType[[2]string{name, typ}] += v
				}
			case strings.HasPrefix(line, "evalflow_api_requests_total{"):
				handled[name] += v
				byType[[2]string{name, "API requests"}] += v
			}
		}
	}
	return out, handled, byType, nil
}

// commandsProcessed is Redis's count of commands it has run.
func commandsProcessed(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "stats").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("redis INFO has no total_commands_processed")
}

func (r result) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Benchmark: a burst of runs against local mode

Reproduce with `+"`make bench-load`"+` (it runs `+"`bin/evalflow-bench-load -runs %d -max-jobs %d`"+`).

Measured %s on %s/%s, %d cores: local mode (redis-server, the local broker, the five
functions, the runner as a process), EVALFLOW_MAX_JOBS=%d, and a scripted
OpenAI-compatible server that answers at once. Each run is one MMLU question.

| measure | value | target |
|---|---|---|
| runs started in one burst (64 callers at a time) | %d | |
| accepted (202) | %d | all |
| ended / succeeded | %d / %d | all |
| jobs created | %d | one per run |
| time to submit the burst | %.1f s | |
| time to drain it (the last run ended) | %.1f s | |
| peak memory, evalflow's processes (RSS) | %.0f MiB | |
| most jobs running at once | %d | ≤ %d |
| most runs waiting for a job slot | %d | |
| Redis round trips per run and step (the functions' evalflow_redis_round_trips_total) | %.1f | ≤ 3 |
| events and API requests the functions handled per run | %.1f | |
| Redis round trips per event or request handled | %.1f | |
| Redis commands (Redis's own count, the benchmark's polling included) | %d | |
| Redis commands per run and step | %.1f | |

- The memory is the sum of the resident sets of redis-server, the five functions and the
  process holding the broker and the job runtime (sampled every 200 ms); the runners'
  own processes are not in it.
- A round trip is a command, or a pipeline or transaction sent at once, as each
  function counts them (scraped before and after the burst); divided by runs × %d
  steps, or by the events (Trigger deliveries, job reports, ticks) and API requests
  the functions handled. Redis's own count of commands adds the commands inside
  transactions and the benchmark's own polling of the runs.
`, r.runs, r.maxJobs, time.Now().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), r.maxJobs,
		r.runs, r.accepted, r.ended, r.succeeded, r.jobs, r.submit.Seconds(), r.drain.Seconds(), r.peakRSS,
		r.mostJobs, r.maxJobs, r.mostWaiting, r.tripsPerStep, r.handledPerRun, r.tripsPerHandled, r.commands, r.commandsPerStep, len(evalflow.Steps))
	b.WriteString("\nRedis round trips by function:\n\n| function | per run | per event or request handled |\n|---|---|---|\n")
	for _, name := range stack.Functions {
		fmt.Fprintf(&b, "| %s | %.1f | %.1f |\n", name, r.tripsPerRun[name], r.tripsPerEvent[name])
	}
	b.WriteString("\nWhat each function handled, per run:\n\n| function | event | per run |\n|---|---|---|\n")
	keys := slices.SortedFunc(maps.Keys(r.eventsPerRun), func(a, b [2]string) int {
		return cmp.Or(slices.Index(stack.Functions, a[0])-slices.Index(stack.Functions, b[0]), strings.Compare(a[1], b[1]))
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %s | %.2f |\n", k[0], k[1], r.eventsPerRun[k])
	}
	return b.String()
}
