package kube

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

// Cluster is a target cluster, reached with a run's kubeconfig, in the namespace of the
// kubeconfig's current context ("default" where it names none).
type Cluster struct {
	Server    string
	Namespace string
	client    kubernetes.Interface
	opts      Options
}

// Options are a deployment's settings for the clusters it reaches.
type Options struct {
	// Images, when set, is the registry prefix (HOST[:PORT]/PATH) Jobs pull the
	// engines' images from instead of the names the engine registry gives.
	Images string
	// StuckAfter is how long a pod may wait for an image or a node before its Job is
	// taken as one that will not run (default DefaultStuckAfter).
	StuckAfter time.Duration
	// Resources are the deployment's own requests and limits for an engine's Jobs,
	// by engine name, over the engine registry's.
	Resources map[string]engines.Resources
}

// ErrBadKubeconfig is a kubeconfig Connect cannot use: unparsable, incomplete, or
// unsafe (ErrUnsafeKubeconfig). No retry mends it: it is evalflow.ErrPermanent.
var ErrBadKubeconfig = evalflow.Permanent(errors.New("kubeconfig refused"))

// ErrUnsafeKubeconfig is a kubeconfig that would have evalflow run a program or read a
// file of its own: exec and auth-provider plugins, and file references.
var ErrUnsafeKubeconfig = fmt.Errorf("%w: unsafe", ErrBadKubeconfig)

// Connect parses kubeconfig. Everything it needs must be inline; a kubeconfig naming a
// program or a file is refused with ErrUnsafeKubeconfig before anything is dialled.
func Connect(kubeconfig []byte) (*Cluster, error) {
	c, err := fromKubeconfig(kubeconfig)
	if err != nil && !errors.Is(err, ErrUnsafeKubeconfig) {
		err = fmt.Errorf("%w: %w", ErrBadKubeconfig, err)
	}
	return c, err
}

func fromKubeconfig(kubeconfig []byte) (*Cluster, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if err := checkInline(cfg); err != nil {
		return nil, err
	}
	cc := clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{})
	rest, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: namespace: %w", err)
	}
	return newCluster(rest, ns)
}

func newCluster(rest *restclient.Config, namespace string) (*Cluster, error) {
	rest.Timeout = 30 * time.Second
	rest.UserAgent = "evalflow"
	client, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return &Cluster{Server: rest.Host, Namespace: namespace, client: client}, nil
}

// InCluster is the source of Own for the cluster evalflow runs in, reached with its
// pod's ServiceAccount.
const InCluster = "in-cluster"

// serviceAccountNamespace is where a pod's ServiceAccount namespace is mounted.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Own is evalflow's own cluster, where runs without a kubeconfig run their Jobs:
// source is InCluster (the pod's ServiceAccount) or the path of an operator's
// kubeconfig file (unlike a caller's, it may name files). Jobs go to namespace, or
// else the ServiceAccount's namespace (InCluster) or the kubeconfig's.
func Own(source, namespace string, o Options) (*Cluster, error) {
	var rest *restclient.Config
	var err error
	if source == InCluster {
		if rest, err = restclient.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("kube: own cluster: %w", err)
		}
		if namespace == "" {
			b, err := os.ReadFile(serviceAccountNamespace)
			if err != nil {
				return nil, fmt.Errorf("kube: own cluster: the ServiceAccount's namespace: %w", err)
			}
			namespace = strings.TrimSpace(string(b))
		}
	} else {
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: source}, &clientcmd.ConfigOverrides{})
		if rest, err = cc.ClientConfig(); err != nil {
			return nil, fmt.Errorf("kube: own cluster: kubeconfig %s: %w", source, err)
		}
		if namespace == "" {
			if namespace, _, err = cc.Namespace(); err != nil {
				return nil, fmt.Errorf("kube: own cluster: kubeconfig %s: %w", source, err)
			}
		}
	}
	c, err := newCluster(rest, namespace)
	if err != nil {
		return nil, err
	}
	c.opts = o
	return c, nil
}

func checkInline(cfg *clientcmdapi.Config) error {
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return fmt.Errorf("kubeconfig: current-context %q is not among its contexts", cfg.CurrentContext)
	}
	unsafe := func(what string) error {
		return fmt.Errorf("%w: %s; give credentials and certificates inline (token, client-certificate-data, certificate-authority-data)", ErrUnsafeKubeconfig, what)
	}
	if u, ok := cfg.AuthInfos[ctx.AuthInfo]; ok {
		switch {
		case u.Exec != nil:
			return unsafe("user " + ctx.AuthInfo + " runs a program (exec)")
		case u.AuthProvider != nil:
			return unsafe("user " + ctx.AuthInfo + " uses an auth-provider plugin")
		case u.TokenFile != "" || u.ClientCertificate != "" || u.ClientKey != "":
			return unsafe("user " + ctx.AuthInfo + " names a file (tokenFile, client-certificate or client-key)")
		}
	}
	if c, ok := cfg.Clusters[ctx.Cluster]; ok && c.CertificateAuthority != "" {
		return unsafe("cluster " + ctx.Cluster + " names a certificate-authority file")
	}
	return nil
}

// Permission is one thing deploy and job-watch do in the namespace.
type Permission struct {
	Verb, Group, Resource string
}

func (p Permission) String() string {
	if p.Group == "" {
		return p.Verb + " " + p.Resource
	}
	return p.Verb + " " + p.Resource + "." + p.Group
}

// Needed are the permissions a run's credentials must have in its namespace: deploy
// creates the Job, its ConfigMap and Secret (owned by the Job, so they go with it);
// job-watch reads the Job; a cancel deletes it.
var Needed = []Permission{
	{"create", "", "configmaps"},
	{"get", "", "configmaps"}, // a redelivery checks the spec it finds is its Job's
	{"create", "", "secrets"},
	{"create", "batch", "jobs"},
	{"get", "batch", "jobs"},
	{"delete", "batch", "jobs"},
	{"list", "", "pods"}, // job-watch reads why a Job does not progress, and its last words
}

// ErrUnauthorized is a cluster that does not accept the kubeconfig's credentials.
var ErrUnauthorized = evalflow.Permanent(errors.New("unauthorized"))

// ErrForbidden is a cluster that answers but does not let the credentials do what a
// run needs.
var ErrForbidden = evalflow.Permanent(errors.New("forbidden"))

// Verify checks that the cluster answers, accepts the credentials, and lets them do
// everything in Needed; its error says which permissions are missing.
func (c *Cluster) Verify(ctx context.Context) error {
	if err := c.client.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Error(); err != nil {
		if apierrors.IsUnauthorized(err) {
			return fmt.Errorf("cluster %s refused the kubeconfig's credentials (%w): %w", c.Server, ErrUnauthorized, err)
		}
		return fmt.Errorf("cluster %s is not reachable: %w", c.Server, err)
	}
	var missing []string
	for _, p := range Needed {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: c.Namespace, Verb: p.Verb, Group: p.Group, Resource: p.Resource}}}
		got, err := c.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("cluster %s: access review of %q: %w", c.Server, p, err)
		}
		if !got.Status.Allowed {
			missing = append(missing, p.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: the kubeconfig's credentials may not %s in namespace %q of cluster %s",
			ErrForbidden, strings.Join(missing, ", "), c.Namespace, c.Server)
	}
	return nil
}

// CreateObjects creates objs in the cluster exactly once: the Job first, then its ConfigMap
// and Secret controlled by it (its pod waits for them), so that deleting the Job — by
// hand, by its TTL, or by a cancel — takes them too. Objects that exist already (a
// redelivery) are left as they are, once they are seen to be evalflow's and this
// run's; created says whether this call made the Job. A create the cluster refuses, or
// an object of the name that is not ours, is evalflow.ErrPermanent; where that is the
// ConfigMap or Secret, the run's own Job is deleted (a Job that is not ours is never
// touched).
func (c *Cluster) CreateObjects(ctx context.Context, objs *JobObjects) (created bool, err error) {
	jobs := c.client.BatchV1().Jobs(objs.Job.Namespace)
	job, err := jobs.Create(ctx, objs.Job, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		if job, err = jobs.Get(ctx, objs.Job.Name, metav1.GetOptions{}); err != nil {
			return false, fmt.Errorf("get job %s: %w", objs.Job.Name, err)
		}
		if !ours(job.ObjectMeta, objs.Job.ObjectMeta) {
			return false, evalflow.Permanent(fmt.Errorf("job %s exists in namespace %s and is not this run's (labels %v)", job.Name, job.Namespace, job.Labels))
		}
	case err != nil:
		return false, fmt.Errorf("create job %s: %w", objs.Job.Name, refused(err))
	default:
		created = true
	}
	if err := c.createParts(ctx, objs, job); err != nil {
		if errors.Is(err, evalflow.ErrPermanent) { // the Job would wait for them forever
			if derr := c.Delete(ctx, job.Name); derr != nil {
				err = fmt.Errorf("%w (and its Job could not be deleted: %v)", err, derr)
			}
		}
		return created, err
	}
	return created, nil
}

// createParts creates job's ConfigMap and Secret, controlled by it.
func (c *Cluster) createParts(ctx context.Context, objs *JobObjects, job *batchv1.Job) error {
	controller := true
	owner := metav1.OwnerReference{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: &controller}
	cm := objs.ConfigMap.DeepCopy()
	cm.OwnerReferences = []metav1.OwnerReference{owner}
	if err := c.createOwned(ctx, cm.Name, job.UID, func() (metav1.Object, error) {
		return c.client.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	}, func() (metav1.Object, error) {
		return c.client.CoreV1().ConfigMaps(cm.Namespace).Get(ctx, cm.Name, metav1.GetOptions{})
	}); err != nil {
		return fmt.Errorf("configmap %s: %w", cm.Name, err)
	}
	if objs.Secret == nil {
		return nil
	}
	// A Secret of the name is not read back: that would need the right to read every
	// Secret of the namespace. The Job mounts the one its create made or found.
	sec := objs.Secret.DeepCopy()
	sec.OwnerReferences = []metav1.OwnerReference{owner}
	if _, err := c.client.CoreV1().Secrets(sec.Namespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create secret %s: %w", sec.Name, refused(err))
	}
	return nil
}

// createOwned creates an object the Job (uid) controls; one that exists already is
// taken as the redelivery's only where that Job controls it.
func (c *Cluster) createOwned(ctx context.Context, name string, uid types.UID, create, get func() (metav1.Object, error)) error {
	_, err := create()
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return refused(err)
	}
	existing, err := get()
	if err != nil {
		return err
	}
	if ref := metav1.GetControllerOfNoCopy(existing); ref == nil || ref.UID != uid {
		return evalflow.Permanent(fmt.Errorf("%s exists and is not controlled by this run's Job", name))
	}
	return nil
}

// ours says whether an existing object is the one want describes: evalflow's
// (managed-by) and the same run's.
func ours(existing, want metav1.ObjectMeta) bool {
	return existing.Labels["app.kubernetes.io/managed-by"] == ManagedBy && existing.Labels[LabelRun] == want.Labels[LabelRun]
}

// Delete deletes the Job name and, through their owner references, its pods, ConfigMap
// and Secret. A Job that is gone already is not an error.
func (c *Cluster) Delete(ctx context.Context, name string) error {
	background := metav1.DeletePropagationBackground
	err := c.client.BatchV1().Jobs(c.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &background})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete job %s: %w", name, err)
	}
	return nil
}

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

// Validate checks the deployment's resources: known engines, valid quantities. A
// deployment that fails it does not start, rather than failing every run at deploy.
func (o Options) Validate() error {
	for name, r := range o.Resources {
		if _, ok := engines.Default().Get(name); !ok {
			return fmt.Errorf("resources: no engine %q", name)
		}
		for field, q := range map[string]string{"cpu": r.CPU, "memory": r.Memory, "memory_limit": r.MemoryLimit} {
			if _, err := resource.ParseQuantity(q); q != "" && err != nil {
				return fmt.Errorf("resources: %s.%s: %q: %w", name, field, q, err)
			}
		}
	}
	return nil
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

// refused marks an error of the API server that a retry will not mend as
// evalflow.ErrPermanent: the cluster refused the objects (forbidden, invalid, no such
// namespace), as opposed to not answering.
func refused(err error) error {
	if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsNotFound(err) ||
		apierrors.IsBadRequest(err) || apierrors.IsUnauthorized(err) {
		return evalflow.Permanent(fmt.Errorf("the cluster refused it: %w", err))
	}
	return err
}

// Create is deploy's job runtime for a Kubernetes target: it builds spec's objects
// for its engine in the cluster's namespace and creates them exactly once; a job that
// exists already is evalflow.ErrJobExists.
func (c *Cluster) Create(ctx context.Context, spec evalflow.JobSpec, secrets evalflow.JobSecrets) error {
	e, ok := engines.Default().Get(spec.Engine)
	if !ok {
		return evalflow.Permanent(fmt.Errorf("job %s: unknown engine %q", spec.ID, spec.Engine))
	}
	objs, err := Build(spec, e.PulledFrom(c.opts.Images).WithResources(c.opts.Resources[e.Name]), c.Namespace, secrets)
	if err != nil {
		return err
	}
	created, err := c.CreateObjects(ctx, objs)
	if err == nil && !created {
		return evalflow.ErrJobExists
	}
	return err
}

// Pool keeps a Cluster per kubeconfig, so that a step reaching the same cluster again
// (job-watch, each tick) reuses its client and connections instead of dialling anew.
// The zero Pool is ready; it holds at most MaxPooled clusters.
type Pool struct {
	Options  // given to each Cluster
	mu       sync.Mutex
	clusters map[[sha256.Size]byte]*Cluster
}

// MaxPooled bounds a Pool; past it the Pool starts afresh.
const MaxPooled = 64

// Connect returns the pooled Cluster of kubeconfig, connecting on first use.
func (p *Pool) Connect(kubeconfig []byte) (*Cluster, error) {
	key := sha256.Sum256(kubeconfig)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clusters[key]; ok {
		return c, nil
	}
	c, err := Connect(kubeconfig)
	if err != nil {
		return nil, err
	}
	c.opts = p.Options
	if p.clusters == nil || len(p.clusters) >= MaxPooled {
		p.clusters = map[[sha256.Size]byte]*Cluster{}
	}
	p.clusters[key] = c
	return c, nil
}
