package kube

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	evalflow "github.com/evalflow/evalflow/shared"
)

// SandboxUID is the sandbox pod's user: neither root nor the runner's, so the
// programs' process limit (RLIMIT_NPROC) counts only the sandbox's processes.
const SandboxUID = 65533

// SandboxProgram is the sandbox image's program (runner/cmd/evalflow-sandbox).
const SandboxProgram = "/evalflow-sandbox"

// LabelComponent marks a run's objects by their part; the sandbox's is "sandbox",
// which the NetworkPolicy SandboxPolicy selects.
const LabelComponent = "app.kubernetes.io/component"

// SandboxName is the name of run id's sandbox pod.
func SandboxName(runID string) string { return evalflow.JobName(runID) + "-sandbox" }

// SandboxPod is the pod where run id's model programs run (HumanEval), made for
// nothing else: image's evalflow-sandbox waits in it, and the runner runs it again in
// the pod (an exec) with each batch. Its walls: no service account token, no
// service links in its environment, a user neither root nor the runner's, every
// capability dropped, no privilege escalation, seccomp RuntimeDefault, a read-only root
// filesystem with an emptyDir of 64 MiB for the programs, 1 CPU and 1 GiB, the node's
// PID limit for a pod, and deadline; SandboxPolicy denies it every connection.
func SandboxPod(runID, image string, deadline time.Duration) *corev1.Pod {
	uid, yes, no := int64(SandboxUID), true, false
	secs := int64(deadline.Seconds())
	limits := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}
	scratch := resource.MustParse("64Mi")
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: SandboxName(runID), Labels: map[string]string{LabelRun: runID,
			"app.kubernetes.io/part-of": "evalflow", LabelComponent: "sandbox", "app.kubernetes.io/managed-by": ManagedBy}},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:        &secs,
			AutomountServiceAccountToken: &no,
			EnableServiceLinks:           &no,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "sandbox", Image: image, Command: []string{SandboxProgram, "-wait"},
				Resources:    corev1.ResourceRequirements{Requests: limits, Limits: limits},
				VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: ScratchDir}},
				SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &yes, AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem: &yes, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
			Volumes: []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &scratch}}}},
		},
	}
}

// SandboxPolicy is the NetworkPolicy of a namespace's sandbox pods: no ingress, no
// egress, not even DNS. A cluster enforces it where a NetworkPolicy controller runs.
func SandboxPolicy() *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "evalflow-sandbox", Labels: map[string]string{"app.kubernetes.io/part-of": "evalflow",
			"app.kubernetes.io/managed-by": ManagedBy}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelComponent: "sandbox", "app.kubernetes.io/part-of": "evalflow"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
}
