package function

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

// pushResults writes a run's results.json and samples.jsonl (20 astronomy samples,
// the first right ones of them right) and pushes them to the layout as the artifact
// step does; it returns the artifact and the two files.
func pushResults(t *testing.T, layout, id string, right int) (*evalflow.Artifact, []byte, []byte) {
	t.Helper()
	dir := t.TempDir()
	var lines strings.Builder
	for doc := range 20 {
		ok := doc < right
		b, _ := json.Marshal(evalflow.Sample{Task: "mmlu_astronomy", Group: "mmlu", DocID: doc, Prompt: fmt.Sprintf("Which planet is number %d?", doc),
			Response: " A", Extracted: map[bool]string{true: "B", false: "A"}[ok], Target: "B", Correct: ok, Metric: "exact_match"})
		lines.Write(append(b, '\n'))
	}
	score := float64(right) / 20
	res := evalflow.Results{Results: map[string]map[string]any{"mmlu_astronomy": {"exact_match,none": score, "exact_match_stderr,none": 0.1}},
		NSamples: map[string]evalflow.NSamples{"mmlu_astronomy": {Original: 152, Effective: 20}},
		Summary:  evalflow.Summary{Scores: map[string]float64{"mmlu_astronomy": score}, Metric: "exact_match", Samples: 20}}
	summary, _ := json.MarshalIndent(res, "", "  ")
	os.WriteFile(filepath.Join(dir, evalflow.ResultsFile), summary, 0o644)
	os.WriteFile(filepath.Join(dir, evalflow.SamplesFile), []byte(lines.String()), 0o644)
	dest, err := oci.Open(oci.Config{Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := dest.Push(context.Background(), oci.Results(dir, id, id, "stories260k", nil, time.Unix(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	return a, summary, []byte(lines.String())
}

// succeed records run id as succeeded with artifact a, as the artifact step does.
func succeed(t *testing.T, p *pipelinetest.Pipeline, id string, a *evalflow.Artifact) {
	t.Helper()
	if _, err := pipelinetest.Update(context.Background(), p.Store, id, func(r *evalflow.Run) error {
		r.Status, r.Artifact = evalflow.StatusSucceeded, a
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestTheResultsAPIReadsARunsArtifact(t *testing.T) {
	layout := t.TempDir()
	srv, p := newAuthFunction(t, map[string]string{"EVALFLOW_OCI_LAYOUT": layout})
	alice, bob := callers["alice"], callers["bob"]
	ids := []string{"7a0e6c1e-0b51-4c4e-9d36-0c6f3a3b9a01", "7a0e6c1e-0b51-4c4e-9d36-0c6f3a3b9a02", "7a0e6c1e-0b51-4c4e-9d36-0c6f3a3b9a03"}
	for _, id := range ids {
		if code, body := call(t, srv, "POST", "/evals/start", alice, mustJSON(validBody(id))); code != 202 {
			t.Fatalf("start %s: %d %s", id, code, body)
		}
	}
	a0, summary, samples := pushResults(t, layout, ids[0], 18)
	a1, _, _ := pushResults(t, layout, ids[1], 2)
	succeed(t, p, ids[0], a0)
	succeed(t, p, ids[1], a1)

	code, body := call(t, srv, "GET", "/evals/"+ids[0]+"/results", alice, nil)
	var view ResultsView
	json.Unmarshal([]byte(body), &view)
	if code != 200 || len(view.Scores) != 1 || view.Scores[0].Value != 0.9 || view.Scores[0].Stderr != 0.1 || view.Artifact.Digest != a0.Digest {
		t.Fatalf("GET results: %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "/evals/"+ids[0]+"/samples?task=mmlu_astronomy&correct=false&limit=1", alice, nil); code != 200 ||
		!strings.Contains(body, `"matched":2`) || !strings.Contains(body, `"doc_id":18`) || strings.Contains(body, `"doc_id":19`) {
		t.Errorf("GET the wrong samples, a page of 1: %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "/evals/"+ids[0]+"/samples?q=NUMBER+7%3F", alice, nil); code != 200 || !strings.Contains(body, `"matched":1`) {
		t.Errorf("search for a text: %d %s", code, body)
	}
	for _, f := range []struct {
		path string
		want []byte
	}{{"/results.json", summary}, {"/samples.jsonl", samples}} {
		if code, body := call(t, srv, "GET", "/evals/"+ids[0]+f.path, alice, nil); code != 200 || body != string(f.want) {
			t.Errorf("GET %s: %d; not the file pushed", f.path, code)
		}
	}

	code, body = call(t, srv, "GET", "/compare?runs="+ids[0]+","+ids[1], alice, nil)
	var c evalflow.Comparison
	json.Unmarshal([]byte(body), &c)
	if code != 200 || len(c.Tasks) != 1 || c.Tasks[0].Diffs[0] == nil || c.Tasks[0].Diffs[0].OnlyFirst != 16 || !c.Tasks[0].Diffs[0].Significant ||
		c.DisagreementsTotal != 16 || !strings.Contains(c.Test, "McNemar") {
		t.Fatalf("compare: %d %s", code, body)
	}

	for _, bad := range []struct {
		path, token, field string
		code               int
	}{
		{"/evals/" + ids[0] + "/samples?correct=maybe", alice, "correct", 400},
		{"/evals/" + ids[0] + "/samples?limit=5000", alice, "limit", 400},
		{"/evals/" + ids[0] + "/samples?limit=0", alice, "limit", 400},
		{"/evals/" + ids[0] + "/samples?offset=-1", alice, "offset", 400},
		{"/compare?runs=" + ids[0], alice, "runs", 400},
		{"/evals/" + ids[2] + "/results", alice, "id", 409}, // pending: no results yet
		{"/compare?runs=" + ids[0] + "," + ids[2], alice, "id", 409},
		{"/evals/" + ids[0] + "/results", bob, "", 404}, // another caller's
		{"/evals/" + ids[0] + "/samples.jsonl", bob, "", 404},
		{"/compare?runs=" + ids[0] + "," + ids[1], bob, "", 404},
		{"/evals/" + ids[0] + "/results", "", "Authorization", 401},
	} {
		code, body := call(t, srv, "GET", bad.path, bad.token, nil)
		if code != bad.code || bad.field != "" && !strings.Contains(body, `"field":"`+bad.field+`"`) || strings.Contains(body, "astronomy") {
			t.Errorf("GET %s: %d %s; want %d naming %q and showing nothing", bad.path, code, body, bad.code, bad.field)
		}
	}
}

func TestADownloadOfATamperedFileIsCutShort(t *testing.T) {
	layout := t.TempDir()
	srv, p := newAuthFunction(t, map[string]string{"EVALFLOW_OCI_LAYOUT": layout})
	id := "7a0e6c1e-0b51-4c4e-9d36-0c6f3a3b9a04"
	if code, body := call(t, srv, "POST", "/evals/start", callers["alice"], mustJSON(validBody(id))); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	a, _, samples := pushResults(t, layout, id, 18)
	succeed(t, p, id, a)
	blobs, _ := filepath.Glob(filepath.Join(layout, "blobs", "sha256", "*"))
	for _, b := range blobs { // the same length, one answer changed
		if body, _ := os.ReadFile(b); string(body) == string(samples) {
			os.WriteFile(b, []byte(strings.Replace(string(body), `"correct":false`, `"correct":true `, 1)), 0o644)
		}
	}
	req, _ := http.NewRequest("GET", srv.URL+"/evals/"+id+"/samples.jsonl", nil)
	req.Header.Set("Authorization", "Bearer "+callers["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if resp.ContentLength != int64(len(samples)) || err == nil || len(got) >= len(samples) {
		t.Errorf("a tampered samples.jsonl was served whole: %d of %d bytes (Content-Length %d), error %v", len(got), len(samples), resp.ContentLength, err)
	}
}

func TestTheResultsPageLogsInOnceThenUsesACookie(t *testing.T) {
	srv, _ := newAuthFunction(t, nil)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, cookies ...*http.Cookie) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		for _, c := range cookies {
			req.AddCookie(c)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := get("/"); r.StatusCode != http.StatusFound || r.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q; want a redirect to /ui/", r.StatusCode, r.Header.Get("Location"))
	}
	page := get("/ui/runs/some-run")
	if page.StatusCode != 200 || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") || !strings.Contains(page.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("GET a page: %d %v", page.StatusCode, page.Header)
	}
	for _, asset := range []string{"/ui/static/app.js", "/ui/static/style.css", "/ui/static/vendor/chart.umd.min.js"} {
		r := get(asset)
		if r.StatusCode != 200 || r.Header.Get("ETag") == "" {
			t.Errorf("GET %s: %d, ETag %q", asset, r.StatusCode, r.Header.Get("ETag"))
			continue
		}
		req, _ := http.NewRequest("GET", srv.URL+asset, nil)
		req.Header.Set("If-None-Match", r.Header.Get("ETag"))
		if again, err := http.DefaultClient.Do(req); err != nil || again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s again, unchanged: %v %v; want 304", asset, again.StatusCode, err)
		}
	}
	if r := get("/ui/static/nothing.js"); r.StatusCode != 404 {
		t.Errorf("GET a file that is not there: %d", r.StatusCode)
	}
	if r := get("/ui/?token=not-a-token"); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Errorf("login with an unknown token: %d, cookies %v; want 401 and none", r.StatusCode, r.Cookies())
	}
	for _, c := range []struct{ next, to string }{{"", "/ui/"}, {"/ui/runs/x", "/ui/runs/x"}, {"https://elsewhere.example/", "/ui/"}, {"//elsewhere.example", "/ui/"},
		{"/ui/../evals", "/ui/"}, {"/ui/%2e%2e/evals", "/ui/"}, {"/ui/./x", "/ui/"}, {"/ui/runs/x?tab=samples", "/ui/runs/x?tab=samples"}} {
		r := get("/ui/?token=" + callers["alice"] + "&next=" + url.QueryEscape(c.next))
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != c.to {
			t.Errorf("login, next %q: %d to %q; want 303 to %q", c.next, r.StatusCode, r.Header.Get("Location"), c.to)
		}
		ck := r.Cookies()
		if len(ck) != 1 || ck[0].Value != callers["alice"] || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode {
			t.Fatalf("login cookie: %+v", ck)
		}
		// The cookie is alice's token: the API answers as to alice.
		if r := get("/evals", ck[0]); r.StatusCode != 200 {
			t.Errorf("GET /evals with the cookie: %d", r.StatusCode)
		}
	}
	// A broker's delivery is never taken from a cookie.
	req, _ := http.NewRequest("POST", srv.URL+"/", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(&http.Cookie{Name: "evalflow_token", Value: callers["alice"]})
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a delivery with a cookie: %v %v; want 401", resp.StatusCode, err)
	}
}

// GET /tasks answers what a run may name: evalflow's datasets, and each lm-eval task
// and group it ships with its n-shot, output type, metrics, size and data; to callers
// with a token only.
func TestTheTasksAPIListsWhatARunMayName(t *testing.T) {
	srv, _ := newAuthFunction(t, nil)
	code, body := call(t, srv, "GET", "/tasks", callers["alice"], nil)
	var cat struct {
		Datasets []struct{ Name string }
		Tasks    []struct {
			Name, Source   string
			OutputType     string `json:"output_type"`
			Group          bool
			Tasks, Metrics []string
			NumFewshot     int `json:"num_fewshot"`
			Samples        int
		}
	}
	if err := json.Unmarshal([]byte(body), &cat); code != 200 || err != nil {
		t.Fatalf("GET /tasks: %d %s", code, body)
	}
	found := map[string]bool{}
	for _, d := range cat.Datasets {
		found[d.Name] = true
	}
	for _, tk := range cat.Tasks {
		found[tk.Name] = true
		switch tk.Name {
		case "bbh_cot_fewshot":
			if !tk.Group || len(tk.Tasks) != 27 || tk.Samples != 6511 || tk.NumFewshot != 3 || tk.Metrics[0] != "exact_match,get-answer" {
				t.Errorf("bbh_cot_fewshot: %+v", tk)
			}
		case "bbh_zeroshot_penguins_in_a_table":
			if tk.Group || tk.Samples != 146 || tk.OutputType != "generate_until" || tk.Source != "bbh/penguins_in_a_table.json" || len(tk.Metrics) != 2 {
				t.Errorf("bbh_zeroshot_penguins_in_a_table: %+v", tk)
			}
		}
	}
	for _, n := range []string{"mmlu", "gsm8k", "bbh", "bbh_zeroshot", "bbh_cot_zeroshot_snarks", "bbh_zeroshot_penguins_in_a_table"} {
		if !found[n] {
			t.Errorf("GET /tasks lacks %s", n)
		}
	}
	if code, _ := call(t, srv, "GET", "/tasks", "", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /tasks without a token: %d", code)
	}
}
