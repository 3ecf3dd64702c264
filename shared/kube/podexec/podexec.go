// Package podexec runs a command in a pod's container, through the API server and
// the kubelet (never the pod's network): how the runner hands the sandbox pod its
// batches. It is apart from package kube so that only what execs links the streams.
package podexec

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// Exec runs command in pod's first container (an exec through the API server and the
// kubelet, never the pod's network) with stdin, writing what it prints to stdout and
// stderr.
func Exec(ctx context.Context, rest *restclient.Config, namespace, pod string, command []string, stdin io.Reader, stdout, stderr io.Writer) error {
	client, err := newClient(rest)
	if err != nil {
		return fmt.Errorf("podexec: exec in %s/%s: %w", namespace, pod, err)
	}
	req := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: command, Stdin: stdin != nil, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(rest, "POST", req.URL())
	if err != nil {
		return fmt.Errorf("podexec: exec in %s/%s: %w", namespace, pod, err)
	}
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr}); err != nil {
		return fmt.Errorf("podexec: exec in %s/%s: %w", namespace, pod, err)
	}
	return nil
}

func newClient(rest *restclient.Config) (*kubernetes.Clientset, error) {
	c, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("podexec: %w", err)
	}
	return c, nil
}
