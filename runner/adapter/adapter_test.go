package adapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/adapter"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
)

func writeSpec(t *testing.T, spec any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "job.json")
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadSpec(t *testing.T) {
	good := evalflow.JobSpec{RunID: "r1", Model: evalflow.ModelSpec{Name: "m", URL: "http://127.0.0.1:1"}, OutputDir: "/out",
		Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}
	if _, err := adapter.ReadSpec(writeSpec(t, good), evalflow.DefaultEngine); err != nil {
		t.Fatalf("a spec with no engine is the built-in runner's: %v", err)
	}
	other := good
	other.Engine = "opencompass"
	noOutput := good
	noOutput.OutputDir = ""
	for name, c := range map[string]struct {
		path, want string
	}{
		"another engine's": {writeSpec(t, other), `asks for engine "opencompass"`},
		"incomplete":       {writeSpec(t, noOutput), "output_dir"},
		"not JSON":         {writeSpec(t, "[1,"), "job spec"},
	} {
		_, err := adapter.ReadSpec(c.path, evalflow.DefaultEngine)
		if !errors.Is(err, evalflow.ErrPermanent) || adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s spec: %v, want a permanent error with %q", name, err, c.want)
		}
	}
	_, err := adapter.ReadSpec(filepath.Join(t.TempDir(), "missing.json"), evalflow.DefaultEngine)
	if err == nil || adapter.ExitCode(err) != 1 {
		t.Errorf("a missing spec: %v, want an error a restart may mend (the volume may come late)", err)
	}
}

func TestAPIKeyIsTrimmed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("sk-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if key, err := adapter.APIKey(evalflow.JobSpec{APIKeyFile: path}); err != nil || key != "sk-1" {
		t.Errorf("APIKey = %q, %v", key, err)
	}
	if key, err := adapter.APIKey(evalflow.JobSpec{}); err != nil || key != "" {
		t.Errorf("APIKey without a file = %q, %v", key, err)
	}
}

func TestOpenAIKeyEnv(t *testing.T) {
	if got := adapter.OpenAIKeyEnv("sk-1"); len(got) != 1 || got[0] != "OPENAI_API_KEY=sk-1" {
		t.Errorf("OpenAIKeyEnv = %q", got)
	}
	if got := adapter.OpenAIKeyEnv(""); got != nil {
		t.Errorf("OpenAIKeyEnv without a key = %q", got)
	}
}

func TestPublishPushesTheResultsWhereTheSpecSays(t *testing.T) {
	ctx := t.Context()
	addr := testserver.Registry(t, "job", "s3cret")
	dir := t.TempDir()
	for name, body := range map[string]string{evalflow.ResultsFile: `{"summary":{"samples":2}}`, evalflow.SamplesFile: "{}\n{}\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	passwordFile := filepath.Join(t.TempDir(), "registry_password")
	if err := os.WriteFile(passwordFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := evalflow.JobSpec{RunID: "r1", OutputDir: dir, Model: evalflow.ModelSpec{Name: "m"},
		Results: &evalflow.ResultsTarget{Repository: addr + "/evalflow/results", Tag: evalflow.StagingTag("r1"), RegistryAccess: evalflow.RegistryAccess{PlainHTTP: true,
			Username: "job", PasswordFile: passwordFile}, Created: time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)}}

	if err := adapter.Publish(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := adapter.Publish(ctx, spec); err != nil { // a pod retried after its push
		t.Fatalf("publishing again: %v", err)
	}

	dest, err := oci.Open(oci.Config{Registry: addr + "/evalflow/results", PlainHTTP: true, Username: "job", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	summary, err := dest.FetchLayer(ctx, "r1-results", oci.MediaTypeSummary)
	if err != nil || string(summary) != `{"summary":{"samples":2}}` {
		t.Errorf("pushed summary = %q, %v", summary, err)
	}

	if err := os.WriteFile(passwordFile, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec.Results.Tag = evalflow.StagingTag("r2")
	if err := adapter.Publish(ctx, spec); !errors.Is(err, evalflow.ErrPermanent) {
		t.Errorf("a refused password: %v, want a permanent error", err)
	}
	if err := adapter.Publish(ctx, evalflow.JobSpec{RunID: "local"}); err != nil {
		t.Errorf("a spec without a results target: %v, want nothing to do", err)
	}
}

// Where the broker asks for a token (Knative's OIDC), the runner's reports carry the
// one its pod was given (the spec's CallbackTokenFile); where it does not, none.
func TestReportsCarryThePodsTokenForTheBroker(t *testing.T) {
	srv := testserver.NewHeaderSink(t, "Authorization")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("pod-token-for-the-broker\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tokenFile := range []string{file, ""} {
		spec := evalflow.JobSpec{RunID: "r1", ID: "j1", CallbackURL: srv.URL, CallbackTokenFile: tokenFile}
		r, err := adapter.NewReporter(spec, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		r.Progress(context.Background(), evalflow.Progress{Phase: "scoring", Done: 1, Total: 2, UpdatedAt: time.Now()})
	}
	if got := srv.Got(); !slices.Equal(got, []string{"Bearer pod-token-for-the-broker", ""}) {
		t.Fatalf("the broker got Authorization %q; want the pod's token, then none", got)
	}
}
