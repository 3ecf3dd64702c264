package kube

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// A Job's state as job-watch reads it: ended, stuck, or what its pods last said.

// JobState is where a Job stands.
type JobState struct {
	Found     bool // false: no such Job (never created, deleted, or past its TTL)
	Finished  bool
	Succeeded bool
	Message   string // why a finished Job failed
	// Stuck says the Job has not finished but will not progress (Message says why):
	// its run fails, and the Job is deleted.
	Stuck bool
}

// State reads the Job name's state from its conditions.
func (c *Cluster) State(ctx context.Context, name string) (JobState, error) {
	job, err := c.client.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return JobState{}, nil
	}
	if err != nil {
		return JobState{}, fmt.Errorf("get job %s: %w", name, err)
	}
	s := StateOf(job)
	switch {
	case s.Finished && !s.Succeeded:
		if words := c.lastWords(ctx, name); words != "" {
			s.Message += "; its last attempt ended saying: " + words
		}
	case !s.Finished:
		pods, err := c.client.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job.Name})
		if err != nil { // the credentials may not list pods: the Job's own status tells, later
			break
		}
		if PodSucceeded(pods.Items) {
			s.Finished, s.Succeeded = true, true
		} else if why := Stuck(pods.Items, time.Now(), cmp.Or(c.opts.StuckAfter, DefaultStuckAfter)); why != "" {
			s.Finished, s.Stuck, s.Message = true, true, why
		}
	}
	return s, nil
}

// PodSucceeded is whether a pod of a Job (one completion) has succeeded: its runner
// exited 0 with its results pushed, and the Job will be Complete. The Job controller
// marks it so seconds later; the pod's phase says it first.
func PodSucceeded(pods []corev1.Pod) bool {
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded {
			return true
		}
	}
	return false
}

// DefaultStuckAfter is how long a pod may wait for an image or a node before its Job
// is taken as one that will not run (an image pull may fail once and then succeed; a
// node may come). An image name that cannot be valid, or a container killed for
// memory, is taken at once.
const DefaultStuckAfter = 2 * time.Minute

// Stuck is why pods (a Job's) will not progress as of now: an image that cannot be
// pulled, a pod no node can take (either for longer than after), a container killed
// for exceeding its memory limit. It is "" while they may.
func Stuck(pods []corev1.Pod, now time.Time, after time.Duration) string {
	for _, p := range pods {
		waited := now.Sub(p.CreationTimestamp.Time)
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable && waited >= after {
				return fmt.Sprintf("pod %s cannot be scheduled: %s", p.Name, c.Message)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				switch {
				case w.Reason == "InvalidImageName",
					(w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && waited >= after:
					return fmt.Sprintf("pod %s cannot pull image %s (%s): %s", p.Name, cs.Image, w.Reason, w.Message)
				}
			}
			for _, t := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
				if t != nil && t.Reason == "OOMKilled" {
					return fmt.Sprintf("pod %s: container %s was killed for exceeding its memory limit (OOMKilled)", p.Name, cs.Name)
				}
			}
		}
	}
	return ""
}

// lastWords is what the Job's last attempt said as it ended: its container's
// termination message, which is the end of its log (see Build). It is "" when the
// pods are gone, or the credentials may not list pods, which verify does not require.
func (c *Cluster) lastWords(ctx context.Context, job string) string {
	pods, err := c.client.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job})
	if err != nil {
		return ""
	}
	return LastWords(pods.Items)
}

// maxLastWords bounds the part of a termination message a run's message quotes.
const maxLastWords = 1000

// LastWords is the termination message of the container that ended last among pods.
func LastWords(pods []corev1.Pod) string {
	var last *corev1.ContainerStateTerminated
	for _, p := range pods {
		for _, cs := range p.Status.ContainerStatuses {
			for _, t := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
				if t != nil && strings.TrimSpace(t.Message) != "" && (last == nil || t.FinishedAt.After(last.FinishedAt.Time)) {
					last = t
				}
			}
		}
	}
	if last == nil {
		return ""
	}
	msg := strings.TrimSpace(last.Message)
	if len(msg) > maxLastWords {
		msg = "..." + msg[len(msg)-maxLastWords:]
	}
	return msg
}

// StateOf reads a Job's state from its Complete and Failed conditions.
func StateOf(job *batchv1.Job) JobState {
	s := JobState{Found: true}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			s.Finished, s.Succeeded = true, true
		case batchv1.JobFailed:
			s.Finished, s.Succeeded = true, false
			s.Message = strings.TrimSpace(c.Reason + ": " + c.Message)
		}
	}
	return s
}
