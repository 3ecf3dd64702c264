package evalflow

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"time"
)

// JobSpec is what the runner reads at /meta/job.json (a file path in local mode): the
// adapter contract between the pipeline and an evaluation engine. It never holds a
// secret: the API key is a file beside it (a Secret volume in a Job).
type JobSpec struct {
	// ID is the job's name, derived from the run id.
	ID    string `json:"id"`
	RunID string `json:"run_id"`
	// Engine names the engine; "evalflow" is the built-in runner.
	Engine string `json:"engine"`
	// EngineConfig is the engine's own config (validated against its schema at start).
	EngineConfig json.RawMessage `json:"engine_config,omitempty"`
	Model        ModelSpec       `json:"model"`
	Datasets     []DatasetSpec   `json:"datasets"`
	// Concurrency is how many requests the runner keeps in flight; 0 sizes it to the
	// endpoint (the runner ramps up while throughput grows).
	Concurrency int `json:"concurrency"`
	// Options tune how the runner treats the endpoint.
	Options RunOptions `json:"options"`
	// APIKeyFile is the path of the file holding the endpoint's API key ("" for none).
	APIKeyFile string `json:"api_key_file,omitempty"`
	// CallbackURL receives the runner's progress reports and its end as CloudEvents.
	CallbackURL string `json:"callback_url,omitempty"`
	// CallbackAudience, when set, is CallbackURL's audience in Knative Eventing's OIDC
	// authentication (the broker's): the Job's pod is given a token of its
	// ServiceAccount for it, renewed by the kubelet, at CallbackTokenFile, which the
	// runner sends with each report.
	CallbackAudience  string `json:"callback_audience,omitempty"`
	CallbackTokenFile string `json:"callback_token_file,omitempty"`
	// ReportKeyFile is the path of the file holding the run's report key, which signs
	// every report to CallbackURL (job-watch drops a report it does not sign).
	ReportKeyFile string `json:"report_key_file,omitempty"`
	// EndReportedFile, when set, is where the runner notes that CallbackURL took its
	// end (job.finished): the local job runtime, which reports every job's end as a
	// Job's watcher would, then does not report that end again.
	EndReportedFile string `json:"end_reported_file,omitempty"`
	// DataDir holds the datasets (layout of ../shared/datasets).
	DataDir string `json:"data_dir"`
	// BaseURLAllow and BaseURLDeny are the deployment's additions to what the model's
	// URL may reach (netpolicy): the job refuses what start and verify refuse.
	BaseURLAllow string `json:"base_url_allow,omitempty"`
	BaseURLDeny  string `json:"base_url_deny,omitempty"`
	// TraceParent is the run's trace context (W3C traceparent), which the job goes on
	// in; OTLPEndpoint is where it sends its spans ("": nowhere).
	TraceParent  string `json:"traceparent,omitempty"`
	OTLPEndpoint string `json:"otlp_endpoint,omitempty"`
	// MetricsAddress is where the job serves its Prometheus metrics while it runs
	// (":9464" in a Kubernetes Job's pod; "": nowhere).
	MetricsAddress string `json:"metrics_address,omitempty"`
	// OutputDir receives results.json and samples.jsonl.
	OutputDir string `json:"output_dir"`
	// DeadlineSeconds bounds the job's run time (activeDeadlineSeconds in a Job).
	DeadlineSeconds int64 `json:"deadline_seconds"`
	// TTLSecondsAfterFinished is how long a finished job is kept.
	TTLSecondsAfterFinished int32 `json:"ttl_seconds_after_finished"`
	// Results, when set, is where the job pushes results.json and samples.jsonl once
	// written: a Kubernetes Job's output directory goes with its pod.
	Results *ResultsTarget `json:"results,omitempty"`
	// Data, when set, is where the job pulls its data from, into DataDir (which must
	// then be writable); without it DataDir holds the data already.
	Data *DataArtifact `json:"data,omitempty"`
	// Sandbox, when set, is where a Kubernetes job runs the model's code.
	Sandbox *SandboxTarget `json:"sandbox,omitempty"`
}

// ResultsTarget is an OCI repository a job pushes its results to, as one artifact
// under a tag job-watch and artifact then read.
type ResultsTarget struct {
	// Repository is HOST[:PORT]/REPOSITORY, as reached from where the job runs.
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	RegistryAccess
	// Created is the run's creation time, recorded on the artifact, so that pushing
	// it again gives the same manifest.
	Created time.Time `json:"created"`
}

// Validate checks the spec by the rules start checks a request by (one validation, not
// two): a spec written by hand or by an older evalflow is refused before any request
// is sent, naming the field. Its errors are CodeInvalid, so ErrPermanent.
func (s *JobSpec) Validate() error {
	switch {
	case s.RunID == "":
		return Invalidf("run_id", "is required")
	case s.OutputDir == "":
		return Invalidf("output_dir", "is required")
	}
	if err := checkText("model.name", s.Model.Name, 256, true); err != nil {
		return err
	}
	if err := checkBaseURL("model.url", s.Model.URL); err != nil {
		return err
	}
	return validateWork(s.Engine, s.Concurrency, &s.Options, s.Datasets)
}

// RegistryAccess is how a job reaches an OCI registry. The password is a file (a
// Secret volume in a Job), never in the spec.
type RegistryAccess struct {
	PlainHTTP    bool   `json:"plain_http,omitempty"`
	Username     string `json:"username,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
}

// DataArtifact is the benchmark data as an OCI artifact (oci.PushDir), which a job
// that has no volume holding it (a Kubernetes Job) pulls into its DataDir.
type DataArtifact struct {
	// Reference is HOST[:PORT]/REPOSITORY@sha256:..., pinned by digest.
	Reference string `json:"reference"`
	RegistryAccess
}

// StagingTag is the tag a job pushes run id's results under; the artifact step tags
// the finished artifact with the run id itself.
func StagingTag(runID string) string { return runID + "-results" }

// CheckpointTag is the tag a job saves run id's checkpoint under when its pod is
// stopped, so that the pod that replaces it asks no finished sample again.
func CheckpointTag(runID string) string { return runID + "-checkpoint" }

// JobSecrets are the secrets a job is created with, kept out of its spec: the
// endpoint's API key, the password of the registry its results go to, and the key its
// reports are signed with.
type JobSecrets struct {
	APIKey           string
	RegistryPassword string
	ReportKey        []byte
}

// ModelSpec is the endpoint under evaluation.
type ModelSpec struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// JobName derives the job's name from the run id: the same run always names the same
// job, so creating it twice is AlreadyExists, never a second job.
func JobName(runID string) string { return "evalflow-" + runID }

// RunOfJob is the run whose job is named name (JobName's inverse), "" for a name no
// run's job has.
func RunOfJob(name string) string {
	id, ok := strings.CutPrefix(name, "evalflow-")
	if !ok || id == "" {
		return ""
	}
	return id
}

// ExitPermanent is the exit code of a runner that cannot run its job at all (a bad
// spec, a method the endpoint cannot do): the job is not started again.
const ExitPermanent = 2

// Results files the runner writes in OutputDir.
const (
	ResultsFile = "results.json"
	SamplesFile = "samples.jsonl"
)

// JobDefaults are the deployment's settings deploy adds to a run's job spec.
type JobDefaults struct {
	// BaseURLAllow and BaseURLDeny: see JobSpec.
	BaseURLAllow, BaseURLDeny string
	CallbackURL               string
	// ClusterCallbackURL is CallbackURL as Kubernetes Jobs reach it (default: the same).
	ClusterCallbackURL string
	// CallbackAudience is the broker's audience (Knative Eventing's OIDC), for the
	// Jobs of evalflow's own cluster, which post to it with a token for it.
	CallbackAudience        string
	DataDir                 string
	ResultsDir              string
	DeadlineSeconds         int64
	TTLSecondsAfterFinished int32
	// Results, when set, is where jobs that run elsewhere (Kubernetes targets) push
	// their results: its Tag and Created are filled in per run.
	Results *ResultsTarget
	// Data, when set, is the data artifact jobs that run elsewhere pull.
	Data *DataArtifact
}

// SandboxTarget is the pod where a Kubernetes job runs the model's code (HumanEval),
// and what lets its runner hand the pod batches: its own ServiceAccount's token,
// which may only exec in that pod.
type SandboxTarget struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Image is the sandbox pod's image (kube.SandboxImage, or under the deployment's
	// registry).
	Image string `json:"image,omitempty"`
	// TokenFile and CAFile are the token and the cluster's CA inside the runner's pod.
	TokenFile string `json:"token_file,omitempty"`
	CAFile    string `json:"ca_file,omitempty"`
}

// SandboxProgram is the sandbox image's program (runner/cmd/evalflow-sandbox).
const SandboxProgram = "/evalflow-sandbox"

// SandboxName is the name of run id's sandbox pod.
func SandboxName(runID string) string { return JobName(runID) + "-sandbox" }

// NewJobSpec is the job spec of run r.
func NewJobSpec(r *Run, d JobDefaults) JobSpec {
	return JobSpec{
		ID: JobName(r.ID), RunID: r.ID, Engine: r.Engine, EngineConfig: r.EngineConfig,
		Model:    ModelSpec{Name: r.ModelName, URL: r.BaseURL},
		Datasets: r.Datasets, Concurrency: r.Concurrency, Options: options(r.Options),
		CallbackURL: callbackURL(r, d), CallbackAudience: callbackAudience(r, d), DataDir: d.DataDir, BaseURLAllow: d.BaseURLAllow, BaseURLDeny: d.BaseURLDeny,
		OutputDir:       ResultsPath(d.ResultsDir, r.ID),
		DeadlineSeconds: d.DeadlineSeconds, TTLSecondsAfterFinished: d.TTLSecondsAfterFinished,
		Results: resultsTarget(r, d.Results), Data: dataArtifact(r, d.Data), Sandbox: sandboxTarget(r),
	}
}

// sandboxTarget is where run r's job runs the model's code: a pod of its own, for a
// Kubernetes job that runs any (a local job runs it under bubblewrap).
func sandboxTarget(r *Run) *SandboxTarget {
	if !r.OnKubernetes() || !r.RunsCode() {
		return nil
	}
	return &SandboxTarget{Pod: SandboxName(r.ID)}
}

// dataArtifact is where run r's job pulls its data from: nowhere for a local run,
// which reads DataDir.
func dataArtifact(r *Run, a *DataArtifact) *DataArtifact {
	if a == nil || !r.OnKubernetes() {
		return nil
	}
	data := *a
	return &data
}

// callbackURL is where run r's job reports progress.
func callbackURL(r *Run, d JobDefaults) string {
	if r.OnKubernetes() && d.ClusterCallbackURL != "" {
		return d.ClusterCallbackURL
	}
	return d.CallbackURL
}

// callbackAudience is the audience of the token run r's job reports with: the
// broker's, for a job in evalflow's own cluster (a job in a caller's cluster has no
// account the broker knows).
func callbackAudience(r *Run, d JobDefaults) string {
	if r.OnKubernetes() && r.OwnCluster {
		return d.CallbackAudience
	}
	return ""
}

// resultsTarget is where run r's job pushes its results: nowhere for a local run,
// whose results directory artifact reads directly.
func resultsTarget(r *Run, t *ResultsTarget) *ResultsTarget {
	if t == nil || !r.OnKubernetes() {
		return nil
	}
	target := *t
	target.Tag, target.Created = StagingTag(r.ID), r.CreatedAt
	return &target
}

func options(o *RunOptions) RunOptions {
	if o == nil {
		return RunOptions{}
	}
	return *o
}

// ResultsPath is where run id's results are, under a results directory.
func ResultsPath(resultsDir, runID string) string { return filepath.Join(resultsDir, runID) }

// APIBase is the OpenAI-compatible API root of a base_url: "http://h:p" and
// "http://h:p/v1" both give "http://h:p/v1".
func APIBase(baseURL string) string {
	b := strings.TrimRight(baseURL, "/")
	if strings.HasSuffix(b, "/v1") {
		return b
	}
	return b + "/v1"
}

// Results is results.json as the runner writes it. Its results, n-samples and config
// keys read as lm-evaluation-harness results; summary is evalflow's headline.
type Results struct {
	Results  map[string]map[string]any `json:"results"`
	Groups   map[string]map[string]any `json:"groups,omitempty"`
	NSamples map[string]NSamples       `json:"n-samples"`
	Config   map[string]any            `json:"config"`
	// Configs, Versions and NShot are lm-eval's own, kept as an external engine
	// (lm-evaluation-harness) wrote them.
	Configs  map[string]json.RawMessage `json:"configs,omitempty"`
	Versions map[string]any             `json:"versions,omitempty"`
	NShot    map[string]any             `json:"n-shot,omitempty"`
	// HigherIsBetter says, per task and group, which way each metric is better.
	HigherIsBetter map[string]map[string]bool `json:"higher_is_better,omitempty"`
	Summary        Summary                    `json:"summary"`
}

// NSamples counts a task's samples as lm-eval does.
type NSamples struct {
	Original  int `json:"original"`
	Effective int `json:"effective"`
}
