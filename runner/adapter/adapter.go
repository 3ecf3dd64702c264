// Package adapter is the engine side of the adapter contract: every evaluation engine
// (the built-in runner, the lm-evaluation-harness and OpenCompass adapters) reads its
// job spec and API key here, reports progress to the pipeline through a Reporter, and
// exits with ExitCode so that a job no attempt can run is not started again.
package adapter

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/oci"
)

// ExitCode is the process exit code for err: evalflow.ExitPermanent when starting
// again cannot help, 1 otherwise, 0 for nil.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, evalflow.ErrPermanent):
		return evalflow.ExitPermanent
	}
	return 1
}

// ReadSpec reads the job spec at path and checks that it is engine's and valid by the
// rules start applies to a request; a spec that is not fails for good, naming the field.
func ReadSpec(path, engine string) (evalflow.JobSpec, error) {
	var spec evalflow.JobSpec
	b, err := os.ReadFile(path)
	if err != nil {
		return spec, fmt.Errorf("job spec: %w", err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, evalflow.Permanent(fmt.Errorf("job spec %s: %w", path, err))
	}
	if got := cmp.Or(spec.Engine, evalflow.DefaultEngine); got != engine {
		return spec, evalflow.Permanent(fmt.Errorf("job spec %s asks for engine %q; this is the %s engine", path, got, engine))
	}
	if err := spec.Validate(); err != nil {
		return spec, fmt.Errorf("job spec %s: %w", path, err)
	}
	return spec, nil
}

// DecodeConfig reads an engine_config strictly into config: no config at all, an
// unknown field or a wrong type is a permanent error naming engine_config. (start
// validated the config against the engine's schema; this guards a spec written by
// hand.)
func DecodeConfig(raw json.RawMessage, config any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return evalflow.Permanent(errors.New("engine_config is required"))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(config); err != nil {
		return evalflow.Permanent(fmt.Errorf("engine_config: %w", err))
	}
	return nil
}

// APIKey reads the endpoint's API key from the file the spec names ("" without one).
func APIKey(spec evalflow.JobSpec) (string, error) {
	if spec.APIKeyFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(spec.APIKeyFile)
	if err != nil {
		return "", fmt.Errorf("run %s: api key: %w", spec.RunID, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// OpenAIKeyEnv is the environment that hands an engine's process the API key: both
// lm_eval and OpenCompass read OPENAI_API_KEY. A key never goes on a command line,
// where any process on the machine could read it.
func OpenAIKeyEnv(apiKey string) []string {
	if apiKey == "" {
		return nil
	}
	return []string{"OPENAI_API_KEY=" + apiKey}
}

// Text reads a value from an engine's JSON output as text: a string as itself,
// anything else (a chat prompt's messages, a list of references) as compact JSON, and
// nothing or null as "".
func Text(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var compact bytes.Buffer
	if json.Compact(&compact, raw) == nil {
		return compact.String()
	}
	return string(raw)
}

// Publish pushes results.json and samples.jsonl from the spec's output directory to
// the repository the spec names (a Kubernetes Job's results leave with it this way;
// a local job's are read where they are, and it names none). The push is
// idempotent: a tag that resolves already is left as it is. Credentials the registry
// refuses are a permanent error.
func Publish(ctx context.Context, spec evalflow.JobSpec) error {
	t := spec.Results
	if t == nil {
		return nil
	}
	dest, err := openRegistry(t.Repository, t.RegistryAccess)
	if err != nil {
		return fmt.Errorf("run %s: results repository: %w", spec.RunID, err)
	}
	_, _, err = dest.Push(ctx, oci.Results(spec.OutputDir, t.Tag, spec.RunID, spec.Model.Name, spec.Datasets, t.Created))
	if err = refusedForGood(err); err != nil {
		return fmt.Errorf("run %s: push results to %s:%s: %w", spec.RunID, t.Repository, t.Tag, err)
	}
	return nil
}

// SaveCheckpoint pushes the checkpoint file to the spec's results repository under the
// run's checkpoint tag: a job whose pod is going (drained, evicted, deleted) leaves its
// finished samples for the pod that replaces it. A local job keeps its directory: no
// results target, nothing to do.
func SaveCheckpoint(ctx context.Context, spec evalflow.JobSpec, file string) error {
	t := spec.Results
	if t == nil {
		return nil
	}
	// A snapshot up to the last whole line: the engine may be appending to the file.
	b, err := os.ReadFile(file)
	end := bytes.LastIndexByte(b, '\n')
	if err != nil || end < 0 {
		return nil // nothing finished yet
	}
	b = b[:end+1]
	snapshot := file + ".saved"
	if err := os.WriteFile(snapshot, b, 0o644); err != nil {
		return fmt.Errorf("run %s: save checkpoint: %w", spec.RunID, err)
	}
	dest, err := openRegistry(t.Repository, t.RegistryAccess)
	if err == nil {
		err = dest.Replace(ctx, snapshot, oci.MediaTypeCheckpoint, evalflow.CheckpointTag(spec.RunID))
	}
	if err != nil {
		return fmt.Errorf("run %s: save checkpoint: %w", spec.RunID, err)
	}
	return nil
}

// RestoreCheckpoint fetches the run's saved checkpoint into file, unless file exists
// (the job started again in the same pod) or none was saved.
func RestoreCheckpoint(ctx context.Context, spec evalflow.JobSpec, file string) error {
	t := spec.Results
	if t == nil {
		return nil
	}
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	dest, err := openRegistry(t.Repository, t.RegistryAccess)
	if err != nil {
		return fmt.Errorf("run %s: restore checkpoint: %w", spec.RunID, err)
	}
	b, err := dest.FetchLayer(ctx, evalflow.CheckpointTag(spec.RunID), oci.MediaTypeCheckpoint)
	switch {
	case errors.Is(err, oci.ErrNotFound):
		return nil // the first pod
	case err != nil:
		return fmt.Errorf("run %s: restore checkpoint: %w", spec.RunID, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("run %s: restore checkpoint: %w", spec.RunID, err)
	}
	return os.WriteFile(file, b, 0o644)
}

// refusedForGood marks credentials a registry refuses as evalflow.ErrPermanent: a
// job's are what its Secret holds, and no attempt of it changes them.
func refusedForGood(err error) error {
	if errors.Is(err, oci.ErrRefused) {
		return evalflow.Permanent(err)
	}
	return err
}

// openRegistry opens repository with the job's access to it (the password from its
// file). A repository that cannot be named is evalflow.ErrPermanent.
func openRegistry(repository string, a evalflow.RegistryAccess) (*oci.Destination, error) {
	password := ""
	if a.PasswordFile != "" {
		b, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("registry password: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	dest, err := oci.Open(oci.Config{Registry: repository, PlainHTTP: a.PlainHTTP, Username: a.Username, Password: password})
	if err != nil {
		return nil, evalflow.Permanent(err)
	}
	return dest, nil
}

// FetchData returns the directory holding the spec's data: its DataDir, or, where the
// spec names a data artifact, that artifact pulled (by digest) under DataDir. A job
// started again where it ran before finds it pulled already.
func FetchData(ctx context.Context, spec evalflow.JobSpec) (string, error) {
	if spec.Data == nil {
		return spec.DataDir, nil
	}
	repo, digest, ok := strings.Cut(spec.Data.Reference, "@")
	if !ok {
		return "", evalflow.Invalidf("data.reference", "must name the artifact by digest (HOST/REPOSITORY@sha256:...), got %q", spec.Data.Reference)
	}
	into := filepath.Join(spec.DataDir, strings.ReplaceAll(digest, ":", "-"))
	complete := filepath.Join(into, ".complete")
	if _, err := os.Stat(complete); err != nil {
		dest, err := openRegistry(repo, spec.Data.RegistryAccess)
		if err != nil {
			return "", fmt.Errorf("run %s: data repository: %w", spec.RunID, err)
		}
		if err := refusedForGood(dest.Pull(ctx, digest, into)); err != nil {
			return "", fmt.Errorf("run %s: pull data %s: %w", spec.RunID, spec.Data.Reference, err)
		}
		if err := os.WriteFile(complete, nil, 0o644); err != nil {
			return "", fmt.Errorf("run %s: data: %w", spec.RunID, err)
		}
	}
	entries, err := os.ReadDir(into)
	if err != nil {
		return "", fmt.Errorf("run %s: data: %w", spec.RunID, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			return filepath.Join(into, e.Name()), nil
		}
	}
	return "", evalflow.Permanent(fmt.Errorf("run %s: data artifact %s holds no directory", spec.RunID, spec.Data.Reference))
}

// Reporter sends a job's reports to its spec's callback URL as CloudEvents, signed
// with the run's report key (job-watch drops what its run's key did not sign), or to
// the log where the spec has no callback. A report that cannot be delivered is
// logged, never fatal: the next supersedes it, and the job's end is seen anyway.
type Reporter struct {
	spec   evalflow.JobSpec
	sender *cloudevent.Sender // nil: to the log
	key    []byte
	log    *slog.Logger
}

// NewReporter returns spec's Reporter.
func NewReporter(spec evalflow.JobSpec, log *slog.Logger) (*Reporter, error) {
	r := &Reporter{spec: spec, log: log}
	if spec.CallbackURL == "" {
		return r, nil
	}
	if spec.ReportKeyFile != "" {
		key, err := os.ReadFile(spec.ReportKeyFile)
		if err != nil {
			return nil, fmt.Errorf("run %s: report key: %w", spec.RunID, err)
		}
		r.key = key
	}
	var client *http.Client
	if spec.CallbackTokenFile != "" { // the broker takes only evalflow's accounts
		client = cloudevent.BearerFile(spec.CallbackTokenFile)
	}
	sender, err := cloudevent.NewSender(spec.CallbackURL, client)
	if err != nil {
		return nil, fmt.Errorf("run %s: callback: %w", spec.RunID, err)
	}
	sender.Retries = 2
	r.sender = sender
	return r, nil
}

// Progress reports p.
func (r *Reporter) Progress(ctx context.Context, p evalflow.Progress) {
	if r.sender == nil {
		r.log.Info("progress", "phase", p.Phase, "done", p.Done, "total", p.Total)
		return
	}
	r.send(ctx, cloudevent.New(evalflow.StepWatch, evalflow.TypeJobProgress, r.spec.RunID,
		evalflow.JobProgress{RunID: r.spec.RunID, Job: r.spec.ID, Progress: p}, p.Phase, fmt.Sprint(p.Done), p.UpdatedAt.String()))
}

// Succeeded reports the job's end with its results' summary, its results written
// (and pushed, where the spec says where): the run goes on at once, not when the
// job's runtime marks the job done (for a Kubernetes Job, seconds after its pod exits).
// Once it is taken, the spec's EndReportedFile says so.
func (r *Reporter) Succeeded(ctx context.Context, summary *evalflow.Summary) {
	if r.sender == nil {
		return
	}
	if !r.send(ctx, cloudevent.New(evalflow.StepWatch, evalflow.TypeJobFinished, r.spec.RunID,
		evalflow.JobFinished{RunID: r.spec.RunID, Job: r.spec.ID, Succeeded: true, Summary: summary}, "runner")) || r.spec.EndReportedFile == "" {
		return
	}
	if err := os.WriteFile(r.spec.EndReportedFile, nil, 0o644); err != nil {
		r.log.Warn("cannot note the end as reported: the job's runtime reports it again", "error", err)
	}
}

// send sends a report, and says whether it was taken.
func (r *Reporter) send(ctx context.Context, ev event.Event) bool {
	ev.SetSource("/evalflow/runner")
	cloudevent.Sign(&ev, r.key)
	if err := r.sender.Send(ctx, ev); err != nil {
		r.log.Warn("report not delivered", "type", ev.Type(), "error", err)
		return false
	}
	return true
}

// Tracker turns completions into progress with a rate and an ETA.
type Tracker struct {
	start      time.Time
	done, base int
	total      int
}

// NewTracker starts tracking at done of total (done > 0 after a resume: the rate
// counts only what this process completes).
func NewTracker(done, total int) *Tracker {
	return &Tracker{start: time.Now(), done: done, base: done, total: total}
}

// Add counts n completions.
func (t *Tracker) Add(n int) { t.done += n }

// Set moves to done of total.
func (t *Tracker) Set(done, total int) { t.done, t.total = done, total }

// Progress is the progress so far, in phase.
func (t *Tracker) Progress(phase string) evalflow.Progress {
	elapsed := time.Since(t.start).Seconds()
	p := evalflow.Progress{Phase: phase, Done: t.done, Total: t.total, UpdatedAt: time.Now().UTC()}
	if n := t.done - t.base; n > 0 && elapsed > 0 {
		p.Rate = float64(n) / elapsed
		p.ETASeconds = float64(t.total-t.done) / p.Rate
	}
	return p
}
