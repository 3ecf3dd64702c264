package function

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

func TestGetListAndCancel(t *testing.T) {
	srv, p := newFunction(t)
	post(t, srv.URL+"/evals/start", "application/json", mustJSON(validBody(runID)))
	get := func(path string) (int, map[string]any, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		var out map[string]any
		json.Unmarshal(buf.Bytes(), &out)
		return resp.StatusCode, out, buf.String()
	}
	del := func(id string) int {
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/evals/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	code, run, raw := get("/evals/" + runID)
	if code != 200 || run["status"] != "pending" || run["steps"] == nil {
		t.Fatalf("GET run: %d %v", code, run)
	}
	if strings.Contains(raw, "sk-test") {
		t.Fatal("GET shows the api_key")
	}
	if code, _, _ := get("/evals/00000000-0000-4000-8000-000000000000"); code != 404 {
		t.Fatalf("GET unknown run: %d, want 404", code)
	}
	if code, out, _ := get("/evals?status=pending"); code != 200 || len(out["runs"].([]any)) != 1 {
		t.Fatalf("list pending: %d %v", code, out)
	}
	if code, out, _ := get("/evals?status=succeeded"); code != 200 || len(out["runs"].([]any)) != 0 {
		t.Fatalf("list succeeded: %d %v", code, out)
	}
	if code, _, _ := get("/evals?status=bogus"); code != 400 {
		t.Fatalf("list with a bad status: %d, want 400", code)
	}

	if c := del(runID); c != 200 {
		t.Fatalf("DELETE: %d", c)
	}
	if c := del(runID); c != 200 {
		t.Fatalf("DELETE again: %d, want 200 (idempotent)", c)
	}
	if r, _ := p.Store.Get(context.Background(), runID); r.Status != evalflow.StatusCancelled {
		t.Fatalf("status after cancel = %s", r.Status)
	}
	if len(p.Sink.OfType("/", evalflow.TypeCancelled)) == 0 {
		t.Fatal("no run.cancelled event for deploy to stop the job")
	}
	other := "5d6e7f80-91a2-4b3c-8d4e-5f6a7b8c9d0e"
	post(t, srv.URL+"/evals/start", "application/json", mustJSON(validBody(other)))
	pipelinetest.Update(context.Background(), p.Store, other, func(r *evalflow.Run) error { return r.Fail("x", time.Now()) })
	if c := del(other); c != 409 {
		t.Fatalf("DELETE of a failed run: %d, want 409", c)
	}
}

func TestEachCallerSeesOnlyItsOwnRuns(t *testing.T) {
	srv, p := newAuthFunction(t, nil)
	aliceRun, bobRun := runID, "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"

	// No token, or one the file does not hold: 401, and nothing is read or changed.
	before := snapshot(t, p)
	for _, token := range []string{"", "not-a-token-of-anyone-at-all"} {
		for _, c := range []struct{ method, path string }{{"POST", "/evals/start"}, {"GET", "/evals"}, {"GET", "/evals/" + aliceRun}, {"DELETE", "/evals/" + aliceRun}, {"POST", "/"}} {
			if code, body := call(t, srv, c.method, c.path, token, mustJSON(validBody(aliceRun))); code != http.StatusUnauthorized || !strings.Contains(body, `"unauthenticated"`) {
				t.Errorf("%s %s with token %q: %d %s; want 401", c.method, c.path, token, code, body)
			}
		}
	}
	if after := snapshot(t, p); after != before {
		t.Fatal("unauthenticated requests changed Redis")
	}

	if code, _ := call(t, srv, "POST", "/evals/start", callers["alice"], mustJSON(validBody(aliceRun))); code != http.StatusAccepted {
		t.Fatalf("alice's start: %d", code)
	}
	if code, _ := call(t, srv, "POST", "/evals/start", callers["bob"], mustJSON(validBody(bobRun))); code != http.StatusAccepted {
		t.Fatalf("bob's start: %d", code)
	}

	if code, body := call(t, srv, "GET", "/evals/"+aliceRun, callers["alice"], nil); code != 200 || !strings.Contains(body, `"caller":"alice"`) {
		t.Errorf("alice's own run: %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "/evals/"+aliceRun+"/events", callers["alice"], nil); code != 200 || !strings.Contains(body, `"title":"Start succeeded"`) {
		t.Errorf("alice's own run's timeline: %d %s", code, body)
	}
	for _, c := range []struct{ method, path string }{{"GET", "/evals/" + bobRun}, {"GET", "/evals/" + bobRun + "/events"}, {"DELETE", "/evals/" + bobRun}} {
		if code, body := call(t, srv, c.method, c.path, callers["alice"], nil); code != http.StatusNotFound || strings.Contains(body, bobRun) {
			t.Errorf("alice %s bob's run: %d %s; want 404 as for no run", c.method, code, body)
		}
	}
	if r, _ := p.Store.Get(context.Background(), bobRun); r.Status != evalflow.StatusPending {
		t.Errorf("alice's DELETE moved bob's run to %s", r.Status)
	}
	if code, body := call(t, srv, "POST", "/evals/start", callers["bob"], mustJSON(validBody(aliceRun))); code != http.StatusConflict || strings.Contains(body, "stories260k") {
		t.Errorf("bob reusing alice's eval_request_id: %d %s; want 409 showing nothing of it", code, body)
	}
	listed := func(token string) []string { return runsListed(t, srv, "/evals", token, "runs", "id") }
	if got := listed(callers["alice"]); !slices.Equal(got, []string{aliceRun}) {
		t.Errorf("alice lists %v", got)
	}
	both := []string{aliceRun, bobRun}
	sort.Strings(both)
	if got := listed(callers["*"]); !slices.Equal(got, both) {
		t.Errorf("the operator lists %v; want both", got)
	}
	if code, _ := call(t, srv, "DELETE", "/evals/"+bobRun, callers["*"], nil); code != 200 {
		t.Errorf("the operator cancelling bob's run: %d", code)
	}

	// Dead letters: each kept once; a caller sees those of its runs, an operator all.
	for _, run := range []string{aliceRun, bobRun, aliceRun} {
		d := evalflow.DeadLetter{ID: "ev-" + run, Type: evalflow.TypeVerified, RunID: run, Destination: "http://evalflow-deploy", Code: "503", Time: time.Now()}
		if err := p.Store.KeepDeadLetter(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	dead := func(token string) []string {
		return runsListed(t, srv, "/deadletters", token, "dead_letters", "run_id")
	}
	if got := dead(callers["alice"]); !slices.Equal(got, []string{aliceRun}) {
		t.Errorf("alice's dead letters: %v", got)
	}
	if got := dead(callers["*"]); !slices.Equal(got, both) {
		t.Errorf("the operator's dead letters: %v; want one of each run", got)
	}
}
