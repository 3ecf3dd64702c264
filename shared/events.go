package evalflow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// EventType is a CloudEvent's type: what an event says happened.
type EventType string

func (t EventType) String() string { return string(t) }

// Event types. The steps are chained only by Triggers that filter on these types
// (triggers/*.yaml); each function replies with the next one.
const (
	TypeRequested    EventType = "dev.evalflow.run.requested" // another service asks for a run → start
	TypeStarted      EventType = "dev.evalflow.run.started"   // start → verify
	TypeVerified     EventType = "dev.evalflow.run.verified"  // verify → deploy
	TypeJobCreated   EventType = "dev.evalflow.job.created"   // deploy → job-watch
	TypeJobProgress  EventType = "dev.evalflow.job.progress"  // runner → job-watch
	TypeJobFinished  EventType = "dev.evalflow.job.finished"  // job runtime → job-watch
	TypeResultsReady EventType = "dev.evalflow.results.ready" // job-watch → artifact
	TypeSucceeded    EventType = "dev.evalflow.run.succeeded" // artifact → callers
	TypeFailed       EventType = "dev.evalflow.run.failed"    // any step → callers
	TypeCancelled    EventType = "dev.evalflow.run.cancelled" // DELETE /evals/{id} → deploy (stops the job)
	TypeNotification EventType = "dev.evalflow.notification"  // every step → the caller
	// TypePing is a PingSource's tick (Tick): job-watch then reads the Jobs of running
	// Kubernetes runs, reports those that ended, and drives runs that stand still.
	TypePing EventType = "dev.knative.sources.ping"
	// TypeJobChanged is an ApiServerSource's news that a Job of evalflow's own cluster,
	// or its pod, changed (eventing/jobsource.yaml), as a reference (JobRef): job-watch
	// then reads that Job's state and reports its end.
	TypeJobChanged EventType = "dev.knative.apiserver.ref.update"
)

// eventTypes are evalflow's own event types (and the Knative sources' it takes).
var eventTypes = []EventType{TypeRequested, TypeStarted, TypeVerified, TypeJobCreated, TypeJobProgress, TypeJobFinished,
	TypeResultsReady, TypeSucceeded, TypeFailed, TypeCancelled, TypeNotification, TypePing, TypeJobChanged}

// Known reports whether t is one of evalflow's own event types.
func (t EventType) Known() bool { return slices.Contains(eventTypes, t) }

// Label is t as a metric's label: evalflow's own types, and "other" for any other,
// so that no sender can add series.
func (t EventType) Label() string {
	if t.Known() {
		return string(t)
	}
	return "other"
}

// Signed reports whether events of type t are signed for the run they are about
// (pipeline.Env.Sign, or a job's report key): every one a step or a job sends about a
// run, the caller's notifications too, but for a caller's request and the Knative
// sources' events.
func (t EventType) Signed() bool {
	return t.Known() && t != TypeRequested && t != TypePing && t != TypeJobChanged
}

// JobReport reports whether events of type typ are a job's (signed with its run's
// report key, which the job holds) rather than a step's (signed with a key only
// evalflow's functions hold).
func JobReport(typ EventType) bool {
	return typ == TypeJobCreated || typ == TypeJobProgress || typ == TypeJobFinished
}

// JobRef is what an ApiServerSource in Reference mode says of an object.
type JobRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
}

// Extension attributes that address a notification to its caller: a caller's
// Trigger filters on them.
const (
	ExtCallerSource = "evalsource"
	ExtCallerTopic  = "evaltopic"
)

// ExtSignature carries an event's signature for its run: a job report's (job.created,
// job.progress, job.finished) an HMAC with the run's report key, which only that run's
// job and evalflow hold; any other step event's with a key only evalflow holds
// (pipeline.Env.Sign).
const ExtSignature = "evalflowsig"

// SourceFor is the CloudEvents source of events a step emits.
func SourceFor(step StepID) string { return "/evalflow/" + string(step) }

// RunRef is the payload of the events that say which run moved on. Stored, when
// set, is the run as the sender last stored it (its JSON, no secret in it): the next
// step writes its move over that copy if the run is still so, without reading it
// first. It is never taken for the run as it is: a copy that is not the stored run
// writes nothing, and the run is read.
type RunRef struct {
	RunID  string          `json:"run_id"`
	Stored json.RawMessage `json:"run,omitempty"`
}

// JobProgress is the runner's progress report.
type JobProgress struct {
	RunID string `json:"run_id"`
	Job   string `json:"job"`
	Progress
}

// JobFinished says a job ended, as the job runtime saw it.
type JobFinished struct {
	RunID     string `json:"run_id"`
	Job       string `json:"job"`
	Succeeded bool   `json:"succeeded"`
	ExitCode  int    `json:"exit_code"`
	Message   string `json:"message,omitempty"`
	// Summary, when the job itself reports its success, is its results' summary
	// (the report is signed): job-watch need not read it back from the results.
	Summary *Summary `json:"summary,omitempty"`
}

// Notification statuses.
const (
	NoteStarted   = "started"
	NoteProgress  = "progress"
	NoteSucceeded = "succeeded"
	NoteFailed    = "failed"
	NoteCancelled = "cancelled"
	NoteQueued    = "queued" // waiting for a job slot
)

// Notification is what the caller hears at each step's start, success or failure and
// when the ETA changes.
type Notification struct {
	RunID     string    `json:"run_id"`
	Step      StepID    `json:"step"`
	Title     string    `json:"title"`
	Message   string    `json:"message,omitempty"`
	Status    string    `json:"status"`
	RunStatus Status    `json:"run_status"`
	Progress  *Progress `json:"progress,omitempty"`
	ETA       time.Time `json:"eta,omitempty"`
	Result    any       `json:"result,omitempty"`
}

// Notify builds the notification for step reaching status on run r.
func Notify(r *Run, step StepID, status, message string) Notification {
	n := Notification{RunID: r.ID, Step: step, Status: status, RunStatus: r.Status,
		Message: message, Title: stepTitle(step) + " " + status}
	if !r.ETA.IsZero() {
		n.ETA = r.ETA
	}
	if status == NoteProgress {
		p := r.Progress
		n.Progress = &p
	}
	if r.Status == StatusSucceeded {
		n.Result = struct {
			Summary  *Summary  `json:"summary,omitempty"`
			Artifact *Artifact `json:"artifact,omitempty"`
		}{r.Summary, r.Artifact}
	}
	return n
}

// DeadLetter is an event a Trigger could not deliver after its retries, as kept for
// operators: its attributes (never its data, which may hold a caller's key), where it
// could not go, the last answer there, and when it came back.
type DeadLetter struct {
	ID          string    `json:"id"`
	Type        EventType `json:"type"`
	Source      string    `json:"source"`
	RunID       string    `json:"run_id,omitempty"` // the event's subject
	Destination string    `json:"destination"`
	Code        string    `json:"code,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Time        time.Time `json:"time"`
}

// TimelineEntry is one entry of a run's history: a notification, as sent, with the
// id of its event and when it was sent.
type TimelineEntry struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Notification
}

func stepTitle(id StepID) string {
	for _, s := range Steps {
		if s.ID == id {
			return s.Title
		}
	}
	return string(id)
}

// EventID derives an event's id from what it says, so a step that redoes its work
// on a redelivery emits the very same event and receivers can drop the copy
// (CloudEvents: source + id identify an event).
func EventID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}

// TickSource is a PingSource: on Schedule it sends Data to the broker of its namespace.
type TickSource struct {
	Name, Broker, Schedule, Data string
}

// Tick is job-watch's PingSource (eventing/pingsource.yaml is the same; local mode's
// broker plays it). In a cluster it exists only while runs are in flight: start makes
// it with a run, job-watch removes it on a tick that finds none, so idle functions stay
// at zero.
var Tick = TickSource{Name: "evalflow-job-watch-tick", Broker: "evalflow", Schedule: "* * * * *",
	Data: `{"reason": "look for Kubernetes Jobs that ended and runs that stand still"}`}
