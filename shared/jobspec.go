package evalflow

// JobSpec is what the runner reads at /meta/job.json (a file path in local mode): the
// adapter contract between the pipeline and an evaluation engine. It never holds a
// secret: the API key is a file beside it (a Secret volume in a Job).
type JobSpec struct {
	// ID is the job's name, derived from the run id.
	ID    string `json:"id"`
	RunID string `json:"run_id"`
	// Engine names the engine; "evalflow" is the built-in runner.
	Engine     string        `json:"engine"`
	Model      ModelSpec     `json:"model"`
	Benchmarks []DatasetSpec `json:"benchmarks"`
	// Concurrency is how many requests the runner keeps in flight.
	Concurrency int `json:"concurrency"`
	// APIKeyFile is the path of the file holding the endpoint's API key ("" for none).
	APIKeyFile string `json:"api_key_file,omitempty"`
	// CallbackURL receives the runner's progress reports as CloudEvents.
	CallbackURL string `json:"callback_url,omitempty"`
	// DataDir holds the datasets (layout of ../shared/datasets).
	DataDir string `json:"data_dir"`
	// OutputDir receives results.json and samples.jsonl.
	OutputDir string `json:"output_dir"`
	// DeadlineSeconds bounds the job's run time (activeDeadlineSeconds in a Job).
	DeadlineSeconds int64 `json:"deadline_seconds"`
	// TTLSecondsAfterFinished is how long a finished job is kept.
	TTLSecondsAfterFinished int32 `json:"ttl_seconds_after_finished"`
}

// ModelSpec is the endpoint under evaluation.
type ModelSpec struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// JobName derives the job's name from the run id: the same run always names the same
// job, so creating it twice is AlreadyExists, never a second job.
func JobName(runID string) string { return "evalflow-" + runID }

// Results files the runner writes in OutputDir.
const (
	ResultsFile = "results.json"
	SamplesFile = "samples.jsonl"
)
