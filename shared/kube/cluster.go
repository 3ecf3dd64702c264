package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// Digests pins images under Images by digest: an image's repository name (its
	// last path element, evalflow-runner) → sha256:… (a release's, EVALFLOW_JOB_IMAGE_DIGESTS).
	Digests map[string]string
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
	rest, own, err := ownConfig(source)
	if err != nil {
		return nil, err
	}
	if namespace == "" {
		namespace = own
	}
	c, err := newCluster(rest, namespace)
	if err != nil {
		return nil, err
	}
	c.opts = o
	return c, nil
}

// ownConfig is how to reach evalflow's own cluster from source (as for Own), and the
// namespace of its ServiceAccount (InCluster) or of its kubeconfig's context.
func ownConfig(source string) (*restclient.Config, string, error) {
	if source == InCluster {
		rest, err := restclient.InClusterConfig()
		if err != nil {
			return nil, "", fmt.Errorf("kube: own cluster: %w", err)
		}
		b, err := os.ReadFile(serviceAccountNamespace)
		if err != nil {
			return nil, "", fmt.Errorf("kube: own cluster: the ServiceAccount's namespace: %w", err)
		}
		return rest, strings.TrimSpace(string(b)), nil
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: source}, &clientcmd.ConfigOverrides{})
	rest, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kube: own cluster: kubeconfig %s: %w", source, err)
	}
	namespace, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kube: own cluster: kubeconfig %s: %w", source, err)
	}
	return rest, namespace, nil
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

// NeededForSandbox are the permissions a run whose score runs the model's code needs
// besides Needed: deploy creates the sandbox pod, the namespace's NetworkPolicy for
// sandbox pods, and the runner's own ServiceAccount with a Role letting it exec in
// that pod, which Kubernetes lets only credentials that may do as much grant.
var NeededForSandbox = []Permission{
	{"create", "", "pods"},
	{"get", "", "pods"},
	{"create", "", "pods/exec"},
	{"create", "", "serviceaccounts"},
	{"create", "rbac.authorization.k8s.io", "roles"},
	{"create", "rbac.authorization.k8s.io", "rolebindings"},
	{"create", "networking.k8s.io", "networkpolicies"},
}

// NeededForTicking are the permissions, in the namespace of evalflow's functions, of
// the steps that make and remove job-watch's tick on demand (OwnTicker).
var NeededForTicking = []Permission{
	{"create", "sources.knative.dev", "pingsources"},
	{"delete", "sources.knative.dev", "pingsources"}, // by name: the tick's alone
}

// ErrUnauthorized is a cluster that does not accept the kubeconfig's credentials.
var ErrUnauthorized = evalflow.Permanent(errors.New("unauthorized"))

// ErrForbidden is a cluster that answers but does not let the credentials do what a
// run needs.
var ErrForbidden = evalflow.Permanent(errors.New("forbidden"))

// Verify checks that the cluster answers, accepts the credentials, and lets them do
// everything in Needed; its error says which permissions are missing.
func (c *Cluster) Verify(ctx context.Context) error { return c.verify(ctx, Needed) }

// VerifyWithSandbox is Verify for a run whose score runs the model's code: Needed
// and NeededForSandbox.
func (c *Cluster) VerifyWithSandbox(ctx context.Context) error {
	return c.verify(ctx, append(slices.Clone(Needed), NeededForSandbox...))
}

func (c *Cluster) verify(ctx context.Context, needed []Permission) error {
	if err := c.client.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Error(); err != nil {
		if apierrors.IsUnauthorized(err) {
			return fmt.Errorf("cluster %s refused the kubeconfig's credentials (%w): %w", c.Server, ErrUnauthorized, err)
		}
		return fmt.Errorf("cluster %s is not reachable: %w", c.Server, err)
	}
	var missing []string
	for _, p := range needed {
		resource, sub, _ := strings.Cut(p.Resource, "/")
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: c.Namespace, Verb: p.Verb, Group: p.Group, Resource: resource, Subresource: sub}}}
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

// createParts creates job's ConfigMap and Secret, controlled by it, and its sandbox
// objects, owned by it.
func (c *Cluster) createParts(ctx context.Context, objs *JobObjects, job *batchv1.Job) error {
	controller := true
	owner := metav1.OwnerReference{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: &controller}
	configMaps := c.client.CoreV1().ConfigMaps(job.Namespace)
	if err := createOwned(ctx, "configmap", objs.ConfigMap.DeepCopy(), owner, configMaps.Create, configMaps.Get); err != nil {
		return err
	}
	if objs.Secret != nil {
		// A Secret of the name is not read back: that would need the right to read
		// every Secret of the namespace. The Job mounts the one its create made or found.
		sec := objs.Secret.DeepCopy()
		sec.OwnerReferences = []metav1.OwnerReference{owner}
		if _, err := c.client.CoreV1().Secrets(sec.Namespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create secret %s: %w", sec.Name, refused(err))
		}
	}
	if objs.Sandbox != nil {
		// Owned, not controlled: the Job controller releases a pod it controls whose
		// labels its selector does not match (the sandbox pod), and the garbage
		// collector takes what the Job owns either way.
		owned := owner
		owned.Controller = nil
		return c.createSandbox(ctx, objs.Sandbox, owned)
	}
	return nil
}

// createSandbox creates a run's sandbox objects, owned by its Job (so that they go
// with it), and the namespace's NetworkPolicy for sandbox pods where it has none.
// The account, its Role and binding come before the pod: the runner's pod waits for
// its account, and the sandbox pod is useless without the right to exec in it.
func (c *Cluster) createSandbox(ctx context.Context, sb *SandboxObjects, owner metav1.OwnerReference) error {
	ns := sb.Pod.Namespace
	if _, err := c.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, sb.Policy, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create networkpolicy %s: %w", sb.Policy.Name, refused(err))
	}
	accounts, roles, bindings, pods := c.client.CoreV1().ServiceAccounts(ns), c.client.RbacV1().Roles(ns), c.client.RbacV1().RoleBindings(ns), c.client.CoreV1().Pods(ns)
	for _, create := range []func() error{
		func() error {
			return createOwned(ctx, "serviceaccount", sb.ServiceAccount.DeepCopy(), owner, accounts.Create, accounts.Get)
		},
		func() error { return createOwned(ctx, "role", sb.Role.DeepCopy(), owner, roles.Create, roles.Get) },
		func() error {
			return createOwned(ctx, "rolebinding", sb.RoleBinding.DeepCopy(), owner, bindings.Create, bindings.Get)
		},
		func() error { return createOwned(ctx, "pod", sb.Pod.DeepCopy(), owner, pods.Create, pods.Get) },
	} {
		if err := create(); err != nil {
			return err
		}
	}
	return nil
}

// createOwned creates obj (a kind of object), owned by owner (the run's Job); one of
// its name that exists already is taken as the redelivery's only where that Job owns
// it.
func createOwned[T metav1.Object](ctx context.Context, kind string, obj T, owner metav1.OwnerReference,
	create func(context.Context, T, metav1.CreateOptions) (T, error), get func(context.Context, string, metav1.GetOptions) (T, error)) error {
	obj.SetOwnerReferences([]metav1.OwnerReference{owner})
	_, err := create(ctx, obj, metav1.CreateOptions{})
	switch {
	case err == nil:
		return nil
	case !apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%s %s: %w", kind, obj.GetName(), refused(err))
	}
	existing, err := get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, obj.GetName(), err)
	}
	if !slices.ContainsFunc(existing.GetOwnerReferences(), func(r metav1.OwnerReference) bool { return r.UID == owner.UID }) {
		return evalflow.Permanent(fmt.Errorf("%s %s exists and is not owned by this run's Job", kind, obj.GetName()))
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
	if spec.Sandbox != nil {
		sb := *spec.Sandbox
		sb.Image = engines.Pinned(c.opts.Images, SandboxImage, c.opts.Digests)
		spec.Sandbox = &sb
	}
	objs, err := Build(spec, e.PulledFrom(c.opts.Images, c.opts.Digests).WithResources(c.opts.Resources[e.Name]), c.Namespace, secrets)
	if err != nil {
		return err
	}
	created, err := c.CreateObjects(ctx, objs)
	if err == nil && !created {
		return evalflow.ErrJobExists
	}
	return err
}
