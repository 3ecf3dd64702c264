package podexec

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Pod is a pod to exec in, reached with given credentials.
type Pod struct {
	Namespace, Name string
	rest            *restclient.Config
}

// InCluster is pod namespace/name reached from a pod of the same cluster with the
// token in tokenFile (re-read as the kubelet renews it) and the cluster's CA in caFile.
func InCluster(namespace, name, tokenFile, caFile string) (*Pod, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fmt.Errorf("podexec: pod %s/%s: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)", namespace, name)
	}
	rest := &restclient.Config{Host: "https://" + net.JoinHostPort(host, port), BearerTokenFile: tokenFile,
		TLSClientConfig: restclient.TLSClientConfig{CAFile: caFile}}
	return &Pod{Namespace: namespace, Name: name, rest: rest}, nil
}

// FromKubeconfig is pod namespace/name reached with a kubeconfig's credentials.
func FromKubeconfig(kubeconfig []byte, namespace, name string) (*Pod, error) {
	rest, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("podexec: kubeconfig: %w", err)
	}
	return &Pod{Namespace: namespace, Name: name, rest: rest}, nil
}

// WaitRunning waits until the pod runs; its error says what the pod waits for.
func (p *Pod) WaitRunning(ctx context.Context) error {
	client, err := newClient(p.rest)
	if err != nil {
		return err
	}
	var last string
	for {
		pod, err := client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		switch {
		case err != nil:
			last = err.Error()
		case pod.Status.Phase == corev1.PodRunning:
			return nil
		case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
			return fmt.Errorf("podexec: pod %s/%s has ended (%s: %s)", p.Namespace, p.Name, pod.Status.Phase, pod.Status.Message)
		default:
			last = string(pod.Status.Phase) + waiting(pod)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("podexec: pod %s/%s is not running (%s): %w", p.Namespace, p.Name, last, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// waiting is why a pod's containers wait, if they say.
func waiting(pod *corev1.Pod) string {
	var why []string
	for _, c := range pod.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			why = append(why, w.Reason+": "+w.Message)
		}
	}
	if len(why) == 0 {
		return ""
	}
	return ", " + strings.Join(why, "; ")
}

// Exec runs command in the pod with stdin, what it prints on stdout to stdout; an
// error quotes the end of what it printed on stderr.
func (p *Pod) Exec(ctx context.Context, command []string, stdin io.Reader, stdout io.Writer) error {
	var stderr bytes.Buffer
	if err := Exec(ctx, p.rest, p.Namespace, p.Name, command, stdin, stdout, &stderr); err != nil {
		if s := strings.TrimSpace(stderr.String()); s != "" {
			return fmt.Errorf("%w: %.500s", err, s)
		}
		return err
	}
	return nil
}
