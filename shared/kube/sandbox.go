package kube

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/podexec"
)

// SandboxUID is the sandbox pod's user: neither root nor the runner's, so the
// programs' process limit (RLIMIT_NPROC) counts only the sandbox's processes.
const SandboxUID = 65533

// LabelComponent marks a run's objects by their part; the sandbox's is "sandbox",
// which the NetworkPolicy SandboxPolicy selects.
const LabelComponent = "app.kubernetes.io/component"

// SandboxImage is the sandbox pod's image (runner/cmd/evalflow-sandbox on Debian's
// python3), pulled from under a deployment's registry as the engines' images are.
const SandboxImage = "ghcr.io/evalflow/evalflow-sandbox:v0.1.0"

// SandboxTokenDir holds, in the runner's pod of a run with a sandbox, its
// ServiceAccount's token (which may only exec in the sandbox pod) and the cluster's CA.
const SandboxTokenDir = "/meta/sandbox"

// SandboxObjects are what a run with a sandbox has besides its Job: the pod, the
// runner's own ServiceAccount, and a Role and RoleBinding letting it do no more than
// exec in that pod; and the namespace's NetworkPolicy for sandbox pods.
type SandboxObjects struct {
	Pod            *corev1.Pod
	ServiceAccount *corev1.ServiceAccount
	Role           *rbacv1.Role
	RoleBinding    *rbacv1.RoleBinding
	Policy         *networkingv1.NetworkPolicy
}

// runnerAccount names the ServiceAccount of run id's runner, and its Role and binding.
func runnerAccount(runID string) string { return evalflow.JobName(runID) + "-runner" }

// sandboxObjects are the sandbox objects of spec's run in namespace, labelled as its
// other objects (meta).
func sandboxObjects(spec evalflow.JobSpec, namespace string, meta func(string) metav1.ObjectMeta) *SandboxObjects {
	pod := SandboxPod(spec.RunID, spec.Sandbox.Image, time.Duration(spec.DeadlineSeconds)*time.Second)
	pod.Namespace = namespace
	name := runnerAccount(spec.RunID)
	no := false
	policy := SandboxPolicy()
	policy.Namespace = namespace
	return &SandboxObjects{
		Pod:            pod,
		ServiceAccount: &corev1.ServiceAccount{ObjectMeta: meta(name), AutomountServiceAccountToken: &no},
		Role: &rbacv1.Role{ObjectMeta: meta(name), Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}, ResourceNames: []string{pod.Name}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}, ResourceNames: []string{pod.Name}},
		}},
		RoleBinding: &rbacv1.RoleBinding{ObjectMeta: meta(name),
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}}},
		Policy: policy,
	}
}

// withSandboxToken is the runner's pod with its own ServiceAccount and that account's
// token (an hour's, renewed by the kubelet) and the cluster's CA at SandboxTokenDir:
// no other token is mounted.
func withSandboxToken(pod corev1.PodSpec, runID string) corev1.PodSpec {
	expiry := int64(3600)
	pod.ServiceAccountName = runnerAccount(runID)
	pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "sandbox-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &expiry}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		}}}})
	for i := range pod.Containers {
		pod.Containers[i].VolumeMounts = append(pod.Containers[i].VolumeMounts, corev1.VolumeMount{Name: "sandbox-token", MountPath: SandboxTokenDir, ReadOnly: true})
	}
	return pod
}

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
		ObjectMeta: metav1.ObjectMeta{Name: evalflow.SandboxName(runID), Labels: map[string]string{LabelRun: runID,
			"app.kubernetes.io/part-of": "evalflow", LabelComponent: "sandbox", "app.kubernetes.io/managed-by": ManagedBy}},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:        &secs,
			AutomountServiceAccountToken: &no,
			EnableServiceLinks:           &no,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "sandbox", Image: image, Command: []string{evalflow.SandboxProgram, "-wait"},
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

// PodExec is pod namespace/name, reached for exec with kubeconfig's credentials (its
// server, certificate authority and bearer token or client certificate).
func PodExec(kubeconfig []byte, namespace, name string) (*podexec.Pod, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kube: exec in %s/%s: kubeconfig: %w", namespace, name, err)
	}
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: exec in %s/%s: %w", namespace, name, err)
	}
	var token func() (string, error)
	if cfg.BearerToken != "" {
		token = func() (string, error) { return cfg.BearerToken, nil }
	}
	return podexec.New(cfg.Host, tlsConfig, token, namespace, name), nil
}
