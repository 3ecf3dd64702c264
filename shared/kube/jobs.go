// Package kube builds the Kubernetes objects of an evaluation job from its job spec and
// its engine's registry entry: a ConfigMap holding job.json (mounted at /meta/job.json),
// a Secret holding the API key (mounted as a file, never in the environment), and a
// batch/v1 Job with a deadline and a TTL. Names derive from the run id, so creating them
// again is AlreadyExists, never a second job.
package kube

import (
	"encoding/json"
	"fmt"
	"path"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

// Paths inside the job's container.
const (
	MetaDir    = "/meta"
	SpecPath   = "/meta/job.json"
	SecretDir  = "/meta/secret"
	APIKeyPath = "/meta/secret/api_key"
	// RegistryPasswordPath holds the password of the registry the results go to.
	RegistryPasswordPath = "/meta/secret/registry_password"
	// ReportKeyPath holds the key the job signs its reports with.
	ReportKeyPath = "/meta/secret/report_key"
	ResultsDir    = "/results"
	// CallbackTokenPath holds the token the job posts its reports with, where the
	// broker asks for one (JobSpec.CallbackAudience).
	CallbackTokenPath = "/meta/broker/token"
)

// LabelRun marks every object of a run with its id.
const LabelRun = "evalflow.dev/run"

// ManagedBy is the app.kubernetes.io/managed-by label of every object deploy makes:
// an object of a run's name without it is not evalflow's, and is never taken as ours.
const ManagedBy = "evalflow-deploy"

// RunnerUID is the user and group the job's container runs as (the images' non-root
// user); the pod's fsGroup makes the mounted Secret readable to it.
const RunnerUID = 65532

// ScratchDir is the container's one writable directory besides ResultsDir: the root
// filesystem is read-only.
const ScratchDir = "/tmp"

// JobObjects are what deploy creates for one run.
type JobObjects struct {
	ConfigMap *corev1.ConfigMap
	Secret    *corev1.Secret // nil when the run has no secret
	Job       *batchv1.Job
	Sandbox   *SandboxObjects // nil when the run runs no code of the model's
}

// Build returns the objects of spec's job, run by engine e in namespace. The secrets
// go in the Secret, mounted as files the spec points to.
func Build(spec evalflow.JobSpec, e *engines.Engine, namespace string, secrets evalflow.JobSecrets) (*JobObjects, error) {
	spec, data := inPod(spec, secrets)
	if spec.Sandbox != nil {
		spec.Sandbox.Namespace = namespace
	}
	body, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("kube: job spec of run %s: %w", spec.RunID, err)
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels(spec, e)}
	}
	objs := &JobObjects{
		ConfigMap: &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: meta(spec.ID + "-spec"), Data: map[string]string{"job.json": string(body)}},
	}
	if len(data) > 0 {
		objs.Secret = &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: meta(spec.ID + "-key"), Type: corev1.SecretTypeOpaque, Data: data}
	}
	resources, err := containerResources(e)
	if err != nil {
		return nil, err
	}
	pod := podSpec(e, objs, resources)
	if spec.Sandbox != nil {
		objs.Sandbox = sandboxObjects(spec, namespace, meta)
		pod = withSandboxToken(pod, spec.RunID)
	}
	if spec.CallbackAudience != "" {
		pod = withCallbackToken(pod, spec.CallbackAudience)
	}
	objs.Job = &batchv1.Job{TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"}, ObjectMeta: meta(spec.ID),
		Spec: jobSpec(spec, pod)}
	return objs, nil
}

// withCallbackToken gives pod's containers a token of its ServiceAccount for audience
// (the broker's) at CallbackTokenPath, which the kubelet renews before it
// expires: what the runner posts its reports with where the broker takes only
// evalflow's own accounts (Knative Eventing's OIDC, eventing/eventpolicy.yaml).
func withCallbackToken(pod corev1.PodSpec, audience string) corev1.PodSpec {
	expiry := int64(3600)
	pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "broker-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: audience, Path: path.Base(CallbackTokenPath), ExpirationSeconds: &expiry}}}}}})
	for i := range pod.Containers {
		pod.Containers[i].VolumeMounts = append(pod.Containers[i].VolumeMounts, corev1.VolumeMount{Name: "broker-token",
			MountPath: path.Dir(CallbackTokenPath), ReadOnly: true})
	}
	return pod
}

// labels are the Kubernetes recommended labels of a run's objects, and evalflow's own.
func labels(spec evalflow.JobSpec, e *engines.Engine) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "evalflow-" + e.Name,
		"app.kubernetes.io/instance":   spec.ID,
		"app.kubernetes.io/component":  "evaluation",
		"app.kubernetes.io/part-of":    "evalflow",
		"app.kubernetes.io/managed-by": ManagedBy,
		LabelRun:                       spec.RunID,
		"evalflow.dev/engine":          e.Name,
	}
}

// inPod is spec as the Job's pod reads it (its paths inside the pod), and the secrets
// its Secret holds, by file name.
func inPod(spec evalflow.JobSpec, secrets evalflow.JobSecrets) (evalflow.JobSpec, map[string][]byte) {
	spec.OutputDir = ResultsDir + "/" + spec.RunID
	spec.DataDir = "/data"
	if spec.Data != nil { // pulled into the scratch volume
		pulled := *spec.Data
		spec.Data, spec.DataDir = &pulled, ScratchDir+"/data"
	}
	data := map[string][]byte{}
	if secrets.APIKey != "" {
		spec.APIKeyFile = APIKeyPath
		data["api_key"] = []byte(secrets.APIKey)
	}
	if len(secrets.ReportKey) > 0 {
		spec.ReportKeyFile = ReportKeyPath
		data["report_key"] = secrets.ReportKey
	}
	if spec.Results != nil && secrets.RegistryPassword != "" {
		results := *spec.Results
		results.PasswordFile = RegistryPasswordPath
		spec.Results = &results
		data["registry_password"] = []byte(secrets.RegistryPassword)
	}
	if spec.CallbackAudience != "" {
		spec.CallbackTokenFile = CallbackTokenPath
	}
	if spec.Sandbox != nil {
		sb := *spec.Sandbox
		sb.TokenFile, sb.CAFile = SandboxTokenDir+"/token", SandboxTokenDir+"/ca.crt"
		spec.Sandbox = &sb
	}
	if spec.Data != nil && secrets.RegistryPassword != "" { // the data lives in the results registry
		spec.Data.PasswordFile = RegistryPasswordPath
		data["registry_password"] = []byte(secrets.RegistryPassword)
	}
	return spec, data
}

// runnerContainer names the Job's one container.
const runnerContainer = "runner"

// jobSpec runs pod once per attempt, at most three, within the spec's deadline; a
// runner that exits with ExitPermanent cannot succeed on a retry and fails the Job,
// and a pod disrupted (evicted, preempted) is replaced without counting as a retry.
func jobSpec(spec evalflow.JobSpec, pod corev1.PodSpec) batchv1.JobSpec {
	backoff, runner := int32(2), runnerContainer
	deadline, ttl := spec.DeadlineSeconds, spec.TTLSecondsAfterFinished
	return batchv1.JobSpec{
		BackoffLimit: &backoff, ActiveDeadlineSeconds: &deadline, TTLSecondsAfterFinished: &ttl,
		PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				ContainerName: &runner, Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{evalflow.ExitPermanent}},
		}, {
			// A pod evicted or preempted (a drain, node pressure) did not fail: its
			// replacement resumes from the checkpoint, without using up a retry.
			Action:          batchv1.PodFailurePolicyActionIgnore,
			OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
		}}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelRun: spec.RunID, "app.kubernetes.io/part-of": "evalflow",
				"app.kubernetes.io/instance": spec.ID, "app.kubernetes.io/component": "evaluation"}},
			Spec: pod,
		},
	}
}

// podSpec runs engine e's image with the job spec, the results directory, a scratch
// directory and the Secret (when objs has one) mounted, as a pod the "restricted" Pod
// Security Standard admits: a non-root user, seccomp RuntimeDefault, every capability
// dropped, no privilege escalation, a read-only root filesystem, no service account
// token. The Secret's files are group-readable, and the pod's fsGroup is the user's.
func podSpec(e *engines.Engine, objs *JobObjects, resources corev1.ResourceRequirements) corev1.PodSpec {
	volumes := []corev1.Volume{
		{Name: "spec", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: objs.ConfigMap.Name}}}},
		{Name: "results", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "spec", MountPath: SpecPath, SubPath: "job.json", ReadOnly: true},
		{Name: "results", MountPath: ResultsDir},
		{Name: "scratch", MountPath: ScratchDir},
	}
	if objs.Secret != nil {
		mode := int32(0o440)
		volumes = append(volumes, corev1.Volume{Name: "key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: objs.Secret.Name, DefaultMode: &mode}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "key", MountPath: SecretDir, ReadOnly: true})
	}
	uid, yes, no := int64(RunnerUID), true, false
	return corev1.PodSpec{
		RestartPolicy:                corev1.RestartPolicyNever,
		AutomountServiceAccountToken: &no,
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name: runnerContainer, Image: e.Image, Command: e.Command, VolumeMounts: mounts,
			Resources: resources,
			// A failed attempt's log tail becomes its termination message, which
			// job-watch quotes when the Job fails.
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &yes, AllowPrivilegeEscalation: &no,
				ReadOnlyRootFilesystem: &yes, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		}},
		Volumes: volumes,
	}
}

// containerResources are engine e's requests and memory limit.
func containerResources(e *engines.Engine) (corev1.ResourceRequirements, error) {
	var parsed [3]resource.Quantity
	for i, q := range []string{e.Resources.CPU, e.Resources.Memory, e.Resources.MemoryLimit} {
		var err error
		if parsed[i], err = resource.ParseQuantity(q); err != nil {
			return corev1.ResourceRequirements{}, fmt.Errorf("kube: engine %s: resources: %q: %w", e.Name, q, err)
		}
	}
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: parsed[0], corev1.ResourceMemory: parsed[1]},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: parsed[2]},
	}, nil
}
