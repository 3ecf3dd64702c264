package kube

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

const (
	key              = "sk-kube-canary-99"
	registryPassword = "registry-canary-42"
	reportKey        = "report-key-canary-0123456789abcd"
)

func build(t *testing.T, engine string) *JobObjects {
	t.Helper()
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: "0f0e0d0c-0b0a-4909-8807-060504030201", ModelName: "m",
		BaseURL: "http://model:8000/v1", Engine: engine, Datasets: []evalflow.DatasetSpec{{Name: "mmlu"}}}, time.Now())
	r.Target = evalflow.TargetKubernetes
	spec := evalflow.NewJobSpec(r, evalflow.JobDefaults{CallbackURL: "http://broker", DeadlineSeconds: 3600, TTLSecondsAfterFinished: 600,
		Results: &evalflow.ResultsTarget{Repository: "registry.example:5000/evalflow/results", RegistryAccess: evalflow.RegistryAccess{Username: "jobs"}}})
	e, _ := engines.Default().Get(engine)
	objs, err := Build(spec, e, "evalflow", evalflow.JobSecrets{APIKey: key, RegistryPassword: registryPassword, ReportKey: []byte(reportKey)})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestTheJobMountsItsSpecAndKeyAsFiles(t *testing.T) {
	objs := build(t, "lm-evaluation-harness")
	job := objs.Job
	c := job.Spec.Template.Spec.Containers[0]

	if job.Name != "evalflow-0f0e0d0c-0b0a-4909-8807-060504030201" || objs.ConfigMap.Name != job.Name+"-spec" || objs.Secret.Name != job.Name+"-key" {
		t.Fatalf("names %s %s %s: not derived from the run id", job.Name, objs.ConfigMap.Name, objs.Secret.Name)
	}
	if c.Image != "ghcr.io/evalflow/lm-eval-adapter:0.4.9" || strings.Join(c.Command, " ") != "/adapter --job /meta/job.json" {
		t.Fatalf("container %s %v: not the registry entry's", c.Image, c.Command)
	}
	if *job.Spec.ActiveDeadlineSeconds != 3600 || *job.Spec.TTLSecondsAfterFinished != 600 {
		t.Fatal("deadline or TTL missing")
	}
	if r := job.Spec.PodFailurePolicy.Rules[0]; r.Action != batchv1.PodFailurePolicyActionFailJob || r.OnExitCodes.Values[0] != evalflow.ExitPermanent {
		t.Fatalf("pod failure policy %+v: a permanent failure must fail the Job at once", r)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	if mounts[SpecPath] != "spec" || mounts[SecretDir] != "key" {
		t.Fatalf("mounts %v", mounts)
	}
	var spec evalflow.JobSpec
	json.Unmarshal([]byte(objs.ConfigMap.Data["job.json"]), &spec)
	if spec.APIKeyFile != APIKeyPath || spec.ReportKeyFile != ReportKeyPath || spec.Engine != "lm-evaluation-harness" || spec.OutputDir != "/results/"+spec.RunID {
		t.Fatalf("job.json %+v", spec)
	}
	if r := spec.Results; r == nil || r.Repository != "registry.example:5000/evalflow/results" || r.Tag != spec.RunID+"-results" ||
		r.Username != "jobs" || r.PasswordFile != RegistryPasswordPath {
		t.Fatalf("job.json's results target %+v: the Job must push its results where job-watch reads them", spec.Results)
	}
}

func TestTheKeyIsOnlyInTheSecret(t *testing.T) {
	objs := build(t, "evalflow")
	for name, obj := range map[string]any{"job": objs.Job, "configmap": objs.ConfigMap} {
		b, _ := json.Marshal(obj)
		if strings.Contains(string(b), key) || strings.Contains(string(b), registryPassword) || strings.Contains(string(b), reportKey) {
			t.Errorf("the %s holds a secret in clear", name)
		}
	}
	if len(objs.Job.Spec.Template.Spec.Containers[0].Env) != 0 {
		t.Error("the job has environment variables; the key must come as a file")
	}
	if string(objs.Secret.Data["api_key"]) != key || string(objs.Secret.Data["registry_password"]) != registryPassword ||
		string(objs.Secret.Data["report_key"]) != reportKey {
		t.Error("the secret lacks the key, the registry password or the report key")
	}
}

func TestTheObjectsDecodeStrictlyAsManifests(t *testing.T) {
	objs := build(t, "opencompass")
	b, err := yaml.Marshal(objs.Job)
	if err != nil {
		t.Fatal(err)
	}
	var back batchv1.Job
	if err := yaml.UnmarshalStrict(b, &back); err != nil || back.Spec.Template.Spec.RestartPolicy != "Never" {
		t.Fatalf("round trip: %v", err)
	}
}

func TestEachEngineAsksForItsOwnResources(t *testing.T) {
	limits := map[string]string{}
	for _, engine := range engines.Default().Names() {
		c := build(t, engine).Job.Spec.Template.Spec.Containers[0]
		limits[engine] = c.Resources.Limits.Memory().String()
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().Cmp(*c.Resources.Limits.Memory()) > 0 {
			t.Errorf("%s: resources %+v", engine, c.Resources)
		}
	}
	if limits["evalflow"] != "512Mi" || limits["lm-evaluation-harness"] != "8Gi" {
		t.Errorf("memory limits %v: want the registry's, small for the Go runner, large for Python engines", limits)
	}
}

// A pod no node takes, or an image that does not come, is given DefaultStuckAfter to mend.
func TestStuckWaitsForWhatMayStillMend(t *testing.T) {
	now := time.Now()
	pod := func(age time.Duration, status corev1.PodStatus) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", CreationTimestamp: metav1.NewTime(now.Add(-age))}, Status: status}
	}
	unschedulable := corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 Insufficient memory."}}}
	backoff := corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "runner", Image: "registry:5000/runner:v1",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}}
	for name, c := range map[string]struct {
		pod  corev1.Pod
		want string
	}{
		"unschedulable, young": {pod(time.Minute, unschedulable), ""},
		"unschedulable, old":   {pod(3*time.Minute, unschedulable), "cannot be scheduled: 0/1 nodes are available: 1 Insufficient memory."},
		"pull backoff, young":  {pod(time.Minute, backoff), ""},
		"pull backoff, old":    {pod(3*time.Minute, backoff), "cannot pull image registry:5000/runner:v1 (ImagePullBackOff)"},
		"running":              {pod(time.Hour, corev1.PodStatus{Phase: corev1.PodRunning}), ""},
	} {
		if got := Stuck([]corev1.Pod{c.pod}, now, DefaultStuckAfter); (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", name, got, c.want)
		}
	}
}

// A Job pulls its data into the scratch volume, with the results registry's password
// from its Secret: its spec names the file, never the password.
func TestAJobPullsItsDataIntoItsScratchVolume(t *testing.T) {
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: "0f0e0d0c-0b0a-4909-8807-060504030202", ModelName: "m",
		BaseURL: "http://model:8000/v1", Datasets: []evalflow.DatasetSpec{{Name: "mmlu"}}}, time.Now())
	r.Target = evalflow.TargetKubernetes
	access := evalflow.RegistryAccess{Username: "jobs"}
	spec := evalflow.NewJobSpec(r, evalflow.JobDefaults{DeadlineSeconds: 3600,
		Results: &evalflow.ResultsTarget{Repository: "registry.example:5000/evalflow/results", RegistryAccess: access},
		Data:    &evalflow.DataArtifact{Reference: "registry.example:5000/evalflow/data@sha256:0123", RegistryAccess: access}})
	e, _ := engines.Default().Get(r.Engine)

	objs, err := Build(spec, e, "evalflow", evalflow.JobSecrets{RegistryPassword: registryPassword})

	if err != nil {
		t.Fatal(err)
	}
	var inPod evalflow.JobSpec
	json.Unmarshal([]byte(objs.ConfigMap.Data["job.json"]), &inPod)
	if inPod.Data == nil || inPod.Data.PasswordFile != RegistryPasswordPath || inPod.DataDir != ScratchDir+"/data" ||
		strings.Contains(objs.ConfigMap.Data["job.json"], registryPassword) || string(objs.Secret.Data["registry_password"]) != registryPassword {
		t.Fatalf("job.json %s", objs.ConfigMap.Data["job.json"])
	}
	if spec.Data.PasswordFile != "" {
		t.Fatal("Build changed the spec it was given")
	}
}

// A deployment's own resources are checked when it starts: an unknown engine or a
// quantity Kubernetes would refuse is named, rather than failing every run later.
func TestADeploymentsResourcesAreCheckedNamingTheField(t *testing.T) {
	for _, c := range []struct {
		res  map[string]engines.Resources
		want string
	}{
		{map[string]engines.Resources{"evalflow": {CPU: "500m", MemoryLimit: "1Gi"}}, ""},
		{map[string]engines.Resources{"nope": {CPU: "1"}}, `no engine "nope"`},
		{map[string]engines.Resources{"evalflow": {MemoryLimit: "lots"}}, "evalflow.memory_limit"},
	} {
		err := Options{Resources: c.res}.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%v: %v; want %q", c.res, err, c.want)
		}
	}
}

// A run whose score runs the model's code gets a sandbox pod, and its runner an
// account of its own whose token is the only one it mounts and which may exec in
// that pod alone; a run that runs none gets neither.
func TestARunThatRunsCodeGetsASandboxPodAndAnAccountForItAlone(t *testing.T) {
	if objs := build(t, evalflow.DefaultEngine); objs.Sandbox != nil || objs.Job.Spec.Template.Spec.ServiceAccountName != "" {
		t.Fatalf("an MMLU run has a sandbox: %+v", objs.Sandbox)
	}
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: "0f0e0d0c-0b0a-4909-8807-060504030203", ModelName: "m",
		BaseURL: "http://model:8000/v1", Datasets: []evalflow.DatasetSpec{{Name: "humaneval"}}}, time.Now())
	r.Target = evalflow.TargetKubernetes
	spec := evalflow.NewJobSpec(r, evalflow.JobDefaults{DeadlineSeconds: 3600})
	spec.Sandbox.Image = "registry.example/evalflow-sandbox:v1"
	e, _ := engines.Default().Get(r.Engine)
	objs, err := Build(spec, e, "evals", evalflow.JobSecrets{APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	sb, pod := objs.Sandbox, objs.Job.Spec.Template.Spec
	if sb == nil || sb.Pod.Name != evalflow.SandboxName(r.ID) || sb.Pod.Namespace != "evals" || sb.Pod.Spec.Containers[0].Image != spec.Sandbox.Image {
		t.Fatalf("sandbox %+v", sb)
	}
	sp := sb.Pod.Spec
	c := sp.Containers[0]
	if *sp.AutomountServiceAccountToken || *sp.EnableServiceLinks || *sp.SecurityContext.RunAsUser == RunnerUID || *sp.SecurityContext.RunAsUser == 0 ||
		!*c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.Capabilities.Drop[0] != "ALL" || c.Resources.Limits.Memory().IsZero() ||
		sp.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || sp.ActiveDeadlineSeconds == nil {
		t.Errorf("the sandbox pod's walls: %+v", sp)
	}
	if sb.Policy.Namespace != "evals" || len(sb.Policy.Spec.PolicyTypes) != 2 || len(sb.Policy.Spec.Ingress)+len(sb.Policy.Spec.Egress) != 0 ||
		sb.Policy.Spec.PodSelector.MatchLabels[LabelComponent] != sb.Pod.Labels[LabelComponent] {
		t.Errorf("the NetworkPolicy does not deny the sandbox everything: %+v", sb.Policy)
	}
	for _, rule := range sb.Role.Rules {
		if len(rule.ResourceNames) != 1 || rule.ResourceNames[0] != sb.Pod.Name {
			t.Errorf("the runner's Role reaches beyond its sandbox pod: %+v", rule)
		}
	}
	if pod.ServiceAccountName != sb.ServiceAccount.Name || sb.RoleBinding.Subjects[0].Name != sb.ServiceAccount.Name || *pod.AutomountServiceAccountToken {
		t.Errorf("the runner's pod runs as %q, automounting %v", pod.ServiceAccountName, *pod.AutomountServiceAccountToken)
	}
	var inPod evalflow.JobSpec
	json.Unmarshal([]byte(objs.ConfigMap.Data["job.json"]), &inPod)
	if inPod.Sandbox == nil || inPod.Sandbox.Namespace != "evals" || !strings.HasPrefix(inPod.Sandbox.TokenFile, SandboxTokenDir) {
		t.Errorf("job.json's sandbox: %+v", inPod.Sandbox)
	}
}

// Where the broker takes only evalflow's accounts (Knative's OIDC), a Job of
// evalflow's own cluster gets a token of its pod's account for the broker's audience,
// renewed by the kubelet, and its spec names the file; a Job in a caller's cluster,
// whose account the broker does not know, gets none.
func TestAJobOfTheOwnClusterGetsATokenForTheBroker(t *testing.T) {
	const audience = "eventing.knative.dev/broker/evalflow/evalflow"
	for _, own := range []bool{true, false} {
		r := evalflow.NewRun(evalflow.Request{EvalRequestID: "0f0e0d0c-0b0a-4909-8807-060504030201", ModelName: "m",
			BaseURL: "http://model:8000/v1", Datasets: []evalflow.DatasetSpec{{Name: "mmlu"}}}, time.Now())
		r.Target = evalflow.TargetKubernetes
		if own {
			r.InOwnCluster()
		}
		spec := evalflow.NewJobSpec(r, evalflow.JobDefaults{CallbackURL: "http://broker", CallbackAudience: audience, DeadlineSeconds: 3600})
		e, _ := engines.Default().Get("evalflow")
		objs, err := Build(spec, e, "evalflow-jobs", evalflow.JobSecrets{})
		if err != nil {
			t.Fatal(err)
		}
		var inPod evalflow.JobSpec
		if err := json.Unmarshal([]byte(objs.ConfigMap.Data["job.json"]), &inPod); err != nil {
			t.Fatal(err)
		}
		pod := objs.Job.Spec.Template.Spec
		var projected *corev1.ServiceAccountTokenProjection
		for _, v := range pod.Volumes {
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.ServiceAccountToken != nil {
						projected = s.ServiceAccountToken
					}
				}
			}
		}
		mounted := false
		for _, m := range pod.Containers[0].VolumeMounts {
			mounted = mounted || (projected != nil && m.MountPath+"/"+projected.Path == CallbackTokenPath && m.ReadOnly)
		}
		switch {
		case own && (projected == nil || projected.Audience != audience || !mounted || inPod.CallbackTokenFile != CallbackTokenPath):
			t.Fatalf("own cluster: token %+v mounted %v, job.json's file %q; want a token for %s at %s", projected, mounted, inPod.CallbackTokenFile, audience, CallbackTokenPath)
		case !own && (projected != nil || inPod.CallbackTokenFile != "" || inPod.CallbackAudience != ""):
			t.Fatalf("a caller's cluster: token %+v, job.json %q %q; want none", projected, inPod.CallbackTokenFile, inPod.CallbackAudience)
		}
		if *pod.AutomountServiceAccountToken {
			t.Fatal("the API server's token is mounted: the runner needs none")
		}
	}
}
