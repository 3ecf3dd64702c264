package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
	"github.com/evalflow/evalflow/shared/runstore"
)

const runID = "3f1c9a52-8d4e-4b7a-9c2f-6e5d4c3b2a10"

func newFunction(t *testing.T) (*httptest.Server, *pipelinetest.Pipeline) {
	t.Helper()
	p := pipelinetest.New(t)
	f := New()
	if err := f.Start(context.Background(), p.Config); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	t.Cleanup(srv.Close)
	return srv, p
}

func validBody(id string) map[string]any {
	return map[string]any{
		"eval_request_id": id, "model_name": "stories260k", "base_url": "http://127.0.0.1:11434/v1",
		"api_key": "sk-test", "datasets": []any{map[string]any{"name": "mmlu", "limit": 2, "subjects": []string{"anatomy"}}},
		"source": "caller-svc", "source_topic": "evals",
	}
}

func post(t *testing.T, url, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// snapshot is every Redis key with its value, to show nothing changed.
func snapshot(t *testing.T, p *pipelinetest.Pipeline) string {
	ctx := context.Background()
	keys := p.Redis.Keys(ctx, "*").Val()
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, p.Redis.Dump(ctx, k).Val())
	}
	return b.String()
}

func TestStartRecordsARunOnceWhateverTheDuplicates(t *testing.T) {
	srv, p := newFunction(t)

	var wg sync.WaitGroup
	codes := make(chan int, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := post(t, srv.URL+"/evals/start", "application/json", mustJSON(validBody(runID)))
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)

	accepted := 0
	for c := range codes {
		switch c {
		case http.StatusAccepted:
			accepted++
		case http.StatusOK:
		default:
			t.Fatalf("start answered %d", c)
		}
	}
	if accepted != 1 {
		t.Fatalf("%d starts were accepted as new; want 1", accepted)
	}
	runs, _ := p.Store.List(context.Background(), runstore.ListOptions{})
	if len(runs) != 1 || runs[0].Status != evalflow.StatusPending || runs[0].Target != evalflow.TargetLocal {
		t.Fatalf("stored runs = %+v", runs)
	}
	started := p.Sink.OfType("/", evalflow.TypeStarted)
	if len(started) == 0 || started[0].Subject() != runID {
		t.Fatalf("no run.started for %s: %v", runID, started)
	}
	for _, e := range started[1:] {
		if e.ID() != started[0].ID() {
			t.Fatalf("re-emitted run.started has another id (%s vs %s): receivers cannot drop the copy", e.ID(), started[0].ID())
		}
	}
}

// userTask is a request whose one dataset brings a task file: a valid one, the line
// override in place of the field it names (or added).
func userTask(with func(string, any) []byte, override string) []byte {
	lines := map[string]string{
		"task": "task: my_arithmetic", "dataset_path": "dataset_path: json",
		"dataset_kwargs": "dataset_kwargs:\n  data_files:\n    test: arithmetic.jsonl",
		"output_type":    "output_type: generate_until", "test_split": "test_split: test",
		"doc_to_text": "doc_to_text: 'Q: {{question}}\\nA:'", "doc_to_target": "doc_to_target: '{{answer}}'",
		"metric_list": "metric_list:\n  - metric: exact_match",
	}
	key, _, _ := strings.Cut(override, ":")
	lines[key] = override
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(lines)) {
		b.WriteString(lines[k] + "\n")
	}
	return with("datasets", []any{map[string]any{"name": "custom", "task_yaml": b.String()}})
}

func TestStartRejectsBadInputNamingTheFieldAndChangesNothing(t *testing.T) {
	srv, p := newFunction(t)
	if code, _ := post(t, srv.URL+"/evals/start", "application/json", mustJSON(validBody(runID))); code != http.StatusAccepted {
		t.Fatalf("seeding a run: %d", code)
	}
	with := func(k string, v any) []byte {
		b := validBody("0b7e1f34-4c2d-4e6f-8a9b-1c2d3e4f5a6b")
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return mustJSON(b)
	}
	cases := []struct {
		name, contentType string
		body              []byte
		field             string
		status            int
	}{
		{"missing eval_request_id", "", with("eval_request_id", nil), "eval_request_id", 400},
		{"bad UUID", "", with("eval_request_id", "run-1"), "eval_request_id", 400},
		{"missing model_name", "", with("model_name", nil), "model_name", 400},
		{"control characters in model_name", "", with("model_name", "a\nb"), "model_name", 400},
		{"invalid UTF-8 in model_name", "", bytes.Replace(with("model_name", "m-XX"), []byte("m-XX"), []byte("m-\xff\xfe"), 1), "model_name", 400},
		{"missing base_url", "", with("base_url", nil), "base_url", 400},
		{"non-http base_url", "", with("base_url", "file:///etc/passwd"), "base_url", 400},
		{"base_url without host", "", with("base_url", "http://"), "base_url", 400},
		{"base_url with credentials", "", with("base_url", "http://u:p@host/v1"), "base_url", 400},
		{"base_url at a cloud metadata address", "", with("base_url", "http://169.254.169.254/latest"), "base_url", 400},
		{"base_url naming a metadata service", "", with("base_url", "http://metadata.google.internal/v1"), "base_url", 400},
		{"no datasets", "", with("datasets", []any{}), "datasets", 400},
		{"unknown dataset", "", with("datasets", []any{"imagenet"}), "datasets[0].name", 400},
		{"unknown subject", "", with("datasets", []any{map[string]any{"name": "mmlu", "subjects": []string{"cooking"}}}), "datasets[0].subjects[0]", 400},
		{"negative limit", "", with("datasets", []any{map[string]any{"name": "mmlu", "limit": -1}}), "datasets[0].limit", 400},
		{"fractional count above 1", "", with("datasets", []any{map[string]any{"name": "mmlu", "limit": 2.5}}), "datasets[0].limit", 400},
		{"limit past any split (overflows an int)", "", with("datasets", []any{map[string]any{"name": "mmlu", "limit": 1e19}}), "datasets[0].limit", 400},
		{"num_fewshot out of range", "", with("datasets", []any{map[string]any{"name": "mmlu", "num_fewshot": 99}}), "datasets[0].num_fewshot", 400},
		{"datasets not an array", "", with("datasets", "mmlu"), "datasets", 400},
		{"model_name not a string", "", with("model_name", 42), "model_name", 400},
		{"unknown field", "", with("temperature", 0.5), "temperature", 400},
		{"concurrency out of range", "", with("concurrency", 100000), "concurrency", 400},
		{"error rate above 1", "", with("options", map[string]any{"max_error_rate": 2}), "options.max_error_rate", 400},
		{"unknown option", "", with("options", map[string]any{"retries": 2}), "retries", 400},
		{"a variant for an lm-eval task", "", with("datasets", []any{map[string]any{"name": "bbh_zeroshot", "variant": "cot"}}), "datasets[0].variant", 400},
		{"more examples than an lm-eval task has", "", with("datasets", []any{map[string]any{"name": "bbh_fewshot", "num_fewshot": 5}}), "datasets[0].num_fewshot", 400},
		{"few-shot winogrande (no train split here)", "", with("datasets", []any{map[string]any{"name": "winogrande", "num_fewshot": 1}}), "datasets[0].num_fewshot", 400},
		{"an unknown BBH task", "", with("datasets", []any{"bbh_zeroshot_chess"}), "datasets[0].name", 400},
		{"unknown gsm8k variant", "", with("datasets", []any{map[string]any{"name": "gsm8k", "variant": "5shot"}}), "datasets[0].variant", 400},
		{"subjects of a task, not a group", "", with("datasets", []any{map[string]any{"name": "mmlu_anatomy", "subjects": []string{"anatomy"}}}), "datasets[0].subjects", 400},
		{"a BBH group's unknown subject", "", with("datasets", []any{map[string]any{"name": "bbh_zeroshot", "subjects": []string{"snarks", "chess"}}}), "datasets[0].subjects[1]", 400},
		{"subjects of a tag", "", with("datasets", []any{map[string]any{"name": "truthfulqa", "subjects": []string{"x"}}}), "datasets[0].subjects", 400},
		{"subjects of a custom dataset", "", with("datasets", []any{map[string]any{"name": "custom", "subjects": []string{"x"}, "samples": []any{map[string]any{"prompt": "a", "target": "b"}}}}), "datasets[0].subjects", 400},
		{"custom sample without a prompt", "", with("datasets", []any{map[string]any{"name": "custom", "samples": []any{
			map[string]any{"prompt": "a", "target": "b"}, map[string]any{"target": "b"}}}}), "datasets[0].samples[1].prompt", 400},
		{"custom path escaping the data dir", "", with("datasets", []any{map[string]any{"name": "custom", "path": "../../etc/x.jsonl"}}), "datasets[0].path", 400},
		{"samples on a built-in dataset", "", with("datasets", []any{map[string]any{"name": "mmlu", "samples": []any{map[string]any{"prompt": "a", "target": "b"}}}}), "datasets[0].samples", 400},
		{"unknown engine", "", with("engine", "helm"), "engine", 400},
		{"engine config missing a required field", "", with("engine", "lm-evaluation-harness"), "engine_config", 400},
		{"engine config of the wrong type", "", func() []byte {
			b := validBody("0b7e1f34-4c2d-4e6f-8a9b-1c2d3e4f5a6b")
			b["engine"], b["engine_config"] = "lm-evaluation-harness", map[string]any{"tasks": []any{"mmlu"}, "num_fewshot": "five"}
			return mustJSON(b)
		}(), "engine_config.num_fewshot", 400},
		{"unknown mmlu method", "", with("datasets", []any{map[string]any{"name": "mmlu", "method": "vibes"}}), "datasets[0].method", 400},
		{"not JSON", "", []byte("{nope"), "body", 400},
		{"empty body", "", nil, "body", 400},
		{"trailing data", "", append(with("source", "x"), []byte(`{"more":1}`)...), "body", 400},
		{"oversized body", "", with("api_key", strings.Repeat("k", evalflow.MaxRequestBytes)), "body", 400},
		{"wrong content type", "text/plain", with("source", "x"), "Content-Type", 400},
		{"a dataset listed twice", "", with("datasets", []any{"gsm8k", map[string]any{"name": "gsm8k", "limit": 2}}), "datasets[1].name", 400},
		{"a custom task listed twice", "", with("datasets", []any{
			map[string]any{"name": "custom", "task": "a", "samples": []any{map[string]any{"prompt": "p", "target": "t"}}},
			map[string]any{"name": "custom", "task": "b", "samples": []any{map[string]any{"prompt": "p", "target": "t"}}},
			map[string]any{"name": "custom", "task": "a", "samples": []any{map[string]any{"prompt": "p", "target": "t"}}}}), "datasets[2].task", 400},
		{"a task file's unknown !function", "", userTask(with, "doc_to_text: !function utils.my_prompt"), "datasets[0].task_yaml.doc_to_text", 400},
		{"a task file's unknown filter", "", userTask(with, "filter_list:\n  - name: x\n    filter:\n      - function: majority_vote"), "datasets[0].task_yaml.filter_list[0].filter[0].function", 400},
		{"a task file's unknown metric", "", userTask(with, "metric_list:\n  - metric: f1"), "datasets[0].task_yaml.metric_list[0].metric", 400},
		{"a task file's template that does not parse", "", userTask(with, "doc_to_text: '{{question'"), "datasets[0].task_yaml.doc_to_text", 400},
		{"a task file's field lm-eval's schema has not", "", userTask(with, "shots: 3"), "datasets[0].task_yaml.shots", 400},
		{"a task file's data outside custom/", "", userTask(with, "dataset_kwargs:\n  data_files:\n    test: ../../etc/passwd"), "datasets[0].task_yaml.dataset_kwargs.data_files.test", 400},
		{"a task file's dataset evalflow has not", "", userTask(with, "dataset_path: allenai/ai2_arc"), "datasets[0].task_yaml.dataset_path", 400},
		{"a task file named as a shipped task", "", userTask(with, "task: gsm8k"), "datasets[0].task_yaml.task", 400},
		{"a task file not YAML", "", with("datasets", []any{map[string]any{"name": "custom", "task_yaml": "task: [x"}}), "datasets[0].task_yaml.task", 400},
		{"a task file with samples too", "", with("datasets", []any{map[string]any{"name": "custom", "task_yaml": "task: x", "samples": []any{map[string]any{"prompt": "p", "target": "t"}}}}), "datasets[0].samples", 400},
		{"a task file path escaping custom/", "", with("datasets", []any{map[string]any{"name": "custom", "task_file": "../x.yaml"}}), "datasets[0].task_file", 400},
		{"subject listed twice", "", with("datasets", []any{map[string]any{"name": "mmlu", "subjects": []string{"anatomy", "virology", "anatomy"}}}), "datasets[0].subjects[2]", 400},
		{"requests per second past any endpoint", "", with("options", map[string]any{"requests_per_second": 1e300}), "options.requests_per_second", 400},
		{"tokens per minute past any endpoint", "", with("options", map[string]any{"tokens_per_minute": 1e15}), "options.tokens_per_minute", 400},
		{"a cost that overflows the sum", "", with("options", map[string]any{"cost_per_1k_prompt_tokens": 1e308}), "options.cost_per_1k_prompt_tokens", 400},
	}
	// An eval_request_id reused with any field changed is a conflict naming that field.
	for field, v := range map[string]any{
		"model_name": "other-model", "base_url": "http://127.0.0.1:11435/v1", "api_key": "sk-other", "source": "another-svc",
		"source_topic": "other", "concurrency": 3, "options": map[string]any{"max_error_rate": 0.5},
		"datasets":   []any{map[string]any{"name": "mmlu", "limit": 3, "subjects": []string{"anatomy"}}},
		"kubeconfig": "apiVersion: v1\nkind: Config\nclusters: []\n",
	} {
		b := validBody(runID)
		b[field] = v
		cases = append(cases, struct {
			name, contentType string
			body              []byte
			field             string
			status            int
		}{"eval_request_id reused with another " + field, "", mustJSON(b), field, 409})
	}
	before := snapshot(t, p)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := c.contentType
			if ct == "" {
				ct = "application/json"
			}

			code, out := post(t, srv.URL+"/evals/start", ct, c.body)

			e, _ := out["error"].(map[string]any)
			if code != c.status || e["field"] != c.field {
				t.Fatalf("answered %d %v; want %d naming %q", code, out, c.status, c.field)
			}
			if msg, _ := e["message"].(string); !strings.HasPrefix(msg, c.field+": ") {
				t.Fatalf("message %q does not name %s", msg, c.field)
			}
		})
	}
	// gsm8k's variants and mmlu's methods from before they were lm-eval's task names
	// name what replaced them.
	for _, c := range []struct{ name, field, value, says string }{
		{"gsm8k", "variant", "cot", `{"name": "gsm8k_cot"}`}, {"gsm8k", "variant", "zeroshot", `"num_fewshot": 0`},
		{"gsm8k", "variant", "fewshot", `drop "variant"`},
		{"mmlu", "method", "generate", `{"name": "mmlu_generative", "num_fewshot": 5}`}, {"mmlu", "method", "loglikelihood", `drop "method"`},
		{"mmlu", "method", "logprobs", "mmlu_generative"},
		{"truthfulqa", "variant", "mc", `["truthfulqa_mc1", "truthfulqa_mc2"]`}, {"truthfulqa", "variant", "gen", "truthfulqa_gen"},
		{"truthfulqa", "variant", "mc1", "truthfulqa_mc1"}, {"truthfulqa", "method", "generate", "truthfulqa_gen"},
	} {
		code, out := post(t, srv.URL+"/evals/start", "application/json", with("datasets", []any{map[string]any{"name": c.name, c.field: c.value}}))
		e, _ := out["error"].(map[string]any)
		if msg, _ := e["message"].(string); code != 400 || e["field"] != "datasets[0]."+c.field || !strings.Contains(msg, c.says) {
			t.Errorf("%s's %s %s: answered %d %v; want 400 saying %s", c.name, c.field, c.value, code, out, c.says)
		}
	}
	if after := snapshot(t, p); after != before {
		t.Fatalf("bad requests changed Redis:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The same task file, valid, is taken.
	if code, out := post(t, srv.URL+"/evals/start", "application/json", userTask(with, "task: my_arithmetic")); code != http.StatusAccepted {
		t.Errorf("a valid task file: answered %d %v", code, out)
	}
}

func TestStartAcceptsTheRequestAsACloudEvent(t *testing.T) {
	srv, p := newFunction(t)
	ids := map[string]string{"binary": runID, "structured": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}
	for mode, id := range ids {
		t.Run(mode, func(t *testing.T) {
			ev := cloudevents.NewEvent()
			ev.SetID("req-" + mode)
			ev.SetSource("/caller-svc")
			ev.SetType(string(evalflow.TypeRequested))
			ev.SetData(cloudevents.ApplicationJSON, validBody(id))
			var req *http.Request
			if mode == "binary" {
				req, _ = http.NewRequest(http.MethodPost, srv.URL+"/", bytes.NewReader(ev.Data()))
				req.Header.Set("Ce-Specversion", "1.0")
				req.Header.Set("Ce-Id", ev.ID())
				req.Header.Set("Ce-Source", ev.Source())
				req.Header.Set("Ce-Type", ev.Type())
				req.Header.Set("Content-Type", "application/json")
			} else {
				b, _ := json.Marshal(ev)
				req, _ = http.NewRequest(http.MethodPost, srv.URL+"/evals/start", bytes.NewReader(b))
				req.Header.Set("Content-Type", "application/cloudevents+json")
			}

			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("answered %d", resp.StatusCode)
			}
			// A Trigger's delivery (at /) takes a CloudEvent or nothing back: Knative's
			// broker fails a delivery answered with anything else. A caller at
			// /evals/start gets the run.
			if delivered := req.URL.Path == "/"; delivered != (len(body) == 0) {
				t.Fatalf("answered %q at %s", body, req.URL.Path)
			}
			if r, err := p.Store.Get(context.Background(), id); err != nil || r.ModelName != "stories260k" {
				t.Fatalf("run not recorded: %v %v", r, err)
			}
		})
	}
	// A CloudEvent of another type, or without a required attribute, is refused naming
	// it, and records nothing.
	for field, without := range map[string]string{"type": "", "id": "Ce-Id", "source": "Ce-Source"} {
		t.Run("bad "+field, func(t *testing.T) {
			id := "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", bytes.NewReader(mustJSON(validBody(id))))
			for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "x", "Ce-Source": "/s", "Ce-Type": evalflow.TypeRequested.String(), "Content-Type": "application/json"} {
				req.Header.Set(k, v)
			}
			if without == "" {
				req.Header.Set("Ce-Type", "com.example.other")
			} else {
				req.Header.Del(without)
			}
			resp, _ := http.DefaultClient.Do(req)
			var out map[string]map[string]any
			json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if resp.StatusCode != 400 || out["error"]["field"] != field {
				t.Fatalf("answered %d %v; want 400 naming %s", resp.StatusCode, out, field)
			}
			if _, err := p.Store.Get(context.Background(), id); !errors.Is(err, evalflow.ErrNotFound) {
				t.Fatalf("a refused event recorded its run: %v", err)
			}
		})
	}
}

// A run's secrets are deleted when it ends; a request reused after that is still
// compared (by a keyed digest), and the same request still answers with the run.
func TestARequestReusedAfterItsRunEndedIsStillCompared(t *testing.T) {
	srv, p := newFunction(t)
	if code, _ := post(t, srv.URL+"/evals/start", "application/json", mustJSON(validBody(runID))); code != http.StatusAccepted {
		t.Fatalf("start: %d", code)
	}
	ctx := context.Background()
	if _, err := pipelinetest.Update(ctx, p.Store, runID, func(r *evalflow.Run) error { return r.Fail("ended for the test", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	if _, secrets, _ := p.Store.GetWithSecrets(ctx, runID); len(secrets) != 0 {
		t.Fatalf("an ended run keeps its secrets: %v", secrets)
	}
	other := validBody(runID)
	other["api_key"] = "sk-other"
	code, out := post(t, srv.URL+"/evals/start", "application/json", mustJSON(other))
	if e, _ := out["error"].(map[string]any); code != http.StatusConflict || e["field"] != "api_key" {
		t.Fatalf("reused with another api_key after the end: %d %v; want 409 naming api_key", code, out)
	}
	if strings.Contains(fmt.Sprint(out), "sk-") {
		t.Fatalf("the answer shows a key: %v", out)
	}
	code, out = post(t, srv.URL+"/evals/start", "application/json", mustJSON(validBody(runID)))
	if run, _ := out["run"].(map[string]any); code != http.StatusOK || run["status"] != "failed" {
		t.Fatalf("the same request again: %d %v; want 200 with the ended run", code, out)
	}
	if keys := p.Redis.Keys(ctx, "*").Val(); slices.ContainsFunc(keys, func(k string) bool { return strings.HasSuffix(k, ":secrets") }) {
		t.Fatalf("a reused request brought secrets back: %v", keys)
	}
}

// callers are the tokens of TestEachCallerSeesOnlyItsOwnRuns.
var callers = map[string]string{"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab", "*": "operator-token-01234567"}

func newAuthFunction(t *testing.T, extra map[string]string) (*httptest.Server, *pipelinetest.Pipeline) {
	t.Helper()
	p := pipelinetest.New(t)
	path := filepath.Join(t.TempDir(), "tokens")
	var b strings.Builder
	for name, token := range callers {
		fmt.Fprintf(&b, "%s %s\n", token, name)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := p.With(map[string]string{"EVALFLOW_TOKENS_FILE": path})
	maps.Copy(cfg, extra)
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	t.Cleanup(srv.Close)
	return srv, p
}

// call sends method path with body (nil: none) as the caller of token ("" for none),
// and returns the status and the body.
func call(t *testing.T, srv *httptest.Server, method, path, token string, body []byte, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s %s: 401 without WWW-Authenticate", method, path)
	}
	return resp.StatusCode, string(b)
}

// runsListed is the run ids (field key) of the items of list in what GET path answers
// the caller of token, sorted.
func runsListed(t *testing.T, srv *httptest.Server, path, token, list, key string) []string {
	t.Helper()
	_, body := call(t, srv, "GET", path, token, nil)
	var out map[string][]map[string]any
	json.Unmarshal([]byte(body), &out)
	var ids []string
	for _, item := range out[list] {
		ids = append(ids, fmt.Sprint(item[key]))
	}
	sort.Strings(ids)
	return ids
}

// A Trigger's delivery at / comes from evalflow's broker: with local mode's delivery
// token, or with Knative's OIDC token of a Trigger's account for start's audience (a
// real API server reviews it). No address opens it: a request to start's cluster-local
// name is anyone's. The event's source is then the run's caller.
func TestABrokersDeliveryIsTakenOnlyFromTheBroker(t *testing.T) {
	t.Run("local mode's shared token", func(t *testing.T) {
		srv, p := newAuthFunction(t, map[string]string{"EVALFLOW_DELIVERY_TOKEN": "delivery-token-0123456789"})
		onlyTheBrokerStarts(t, srv, p, []deliveryTry{
			{"the broker's token", "delivery-token-0123456789", "", http.StatusAccepted},
			{"start's cluster-local address", "", "evalflow-start.evalflow.svc.cluster.local", http.StatusUnauthorized},
			{"a public address", "", "evalflow-start.evalflow.example.com", http.StatusUnauthorized},
			{"a wrong token", "delivery-token-0123456780", "", http.StatusUnauthorized},
		})
		// The delivery token opens nothing else.
		if code, _ := call(t, srv, "GET", "/evals", "delivery-token-0123456789", nil); code != http.StatusUnauthorized {
			t.Errorf("GET /evals with the delivery token: %d; want 401", code)
		}
	})
	t.Run("Knative's OIDC tokens", func(t *testing.T) {
		const audience = "serving.knative.dev/service/evalflow/evalflow-start"
		k := pipelinetest.NewDeliveries(t, audience)
		srv, p := newAuthFunction(t, k.Config)
		trigger := k.Trigger(t, "evalflow-start-requested")
		onlyTheBrokerStarts(t, srv, p, []deliveryTry{
			{"a Trigger's token for start", trigger, "", http.StatusAccepted},
			{"start's cluster-local address", "", "evalflow-start.evalflow.svc.cluster.local", http.StatusUnauthorized},
			{"another namespace's account", k.Token(t, "intruder", "default", audience), "evalflow-start.evalflow.svc.cluster.local", http.StatusUnauthorized},
			{"a Trigger's token for another step", k.Token(t, "evalflow", "evalflow-verify-oidc-eventing.knative.dev-trigger",
				"serving.knative.dev/service/evalflow/evalflow-verify"), "", http.StatusUnauthorized},
		})
		if code, _ := call(t, srv, "GET", "/evals", trigger, nil); code != http.StatusUnauthorized {
			t.Errorf("GET /evals with a Trigger's token: %d; want 401", code)
		}
	})
}

// deliveryTry is a run.requested event posted to start with token (a bearer) to
// host ("": the server's), and the answer it must get.
type deliveryTry struct {
	name, token, host string
	want              int
}

// onlyTheBrokerStarts posts a run.requested event for each try, and checks its answer
// and whether its run is recorded, as its caller.
func onlyTheBrokerStarts(t *testing.T, srv *httptest.Server, p *pipelinetest.Pipeline, tries []deliveryTry) {
	t.Helper()
	event := func(id string) []byte { return mustJSON(validBody(id)) }
	ce := []string{"Ce-Specversion", "1.0", "Ce-Id", "e1", "Ce-Source", "/caller-svc", "Ce-Type", evalflow.TypeRequested.String()}
	for i, c := range tries {
		id := fmt.Sprintf("2c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5%d", i)
		header := ce
		if c.host != "" {
			header = append(slices.Clone(ce), "Host", c.host)
		}
		code, body := call(t, srv, "POST", "/", c.token, event(id), header...)
		if code != c.want {
			t.Errorf("%s: %d %s; want %d", c.name, code, body, c.want)
			continue
		}
		r, err := p.Store.Get(context.Background(), id)
		switch {
		case c.want == http.StatusAccepted && (err != nil || r.Caller != "/caller-svc"):
			t.Errorf("%s: run %+v, %v; want it recorded as /caller-svc's", c.name, r, err)
		case c.want != http.StatusAccepted && err == nil:
			t.Errorf("%s: refused, yet its run is recorded", c.name)
		}
	}
}

// A run recorded makes job-watch's tick (made on demand, on a real API server with
// the rights eventing/rbac.yaml grants start), which drives it if an event is lost.
func TestARecordedRunMakesJobWatchsTick(t *testing.T) {
	p := pipelinetest.New(t)
	ticks := pipelinetest.NewTicks(t)
	f := New()
	if err := f.Start(context.Background(), p.With(ticks.Config)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	t.Cleanup(srv.Close)
	if ticks.Ticking(t) {
		t.Fatal("ticking before any run")
	}
	if code, out := post(t, srv.URL+"/evals/start", "application/json", mustJSON(validBody(runID))); code != http.StatusAccepted {
		t.Fatalf("POST: %d %v", code, out)
	}
	if !ticks.Ticking(t) {
		t.Fatal("a run recorded, and no tick")
	}
}
