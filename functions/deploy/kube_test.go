package function

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
	"github.com/evalflow/evalflow/shared/runstore"
)

// TestKubernetesTargets deploys runs whose kubeconfig reaches a real kube-apiserver
// (RBAC, with kube-controller-manager's garbage collector).
func TestKubernetesTargets(t *testing.T) {
	deployer := localserver.KubeUser{Name: "deployer", Token: "deployer-token"}
	nobody := localserver.KubeUser{Name: "nobody", Token: "nobody-token"}
	k := testserver.Kube(t, localserver.KubeOptions{Users: []localserver.KubeUser{deployer, nobody}, Controllers: true})
	admin := testserver.KubeAdmin(t, k)
	testserver.Namespace(t, admin, "evals")
	testserver.Grant(t, admin, "evals", deployer.Name, testserver.EvalRules)
	ctx := context.Background()
	verified := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, runID, evalflow.RunRef{RunID: runID})
	cancelled := cloudevent.New(evalflow.StepStart, evalflow.TypeCancelled, runID, evalflow.RunRef{RunID: runID})
	signed := func(fx *fixture, e event.Event) event.Event { // as the step sending it signs it
		e = e.Clone()
		fx.f.Sign(&e, runID)
		return e
	}
	job := evalflow.JobName(runID)

	t.Run("one job in the run's namespace under concurrent duplicates, then a cancel deletes it", func(t *testing.T) {
		fx := newFixture(t, t.TempDir())
		fx.verifiedRun(t, string(k.Kubeconfig(deployer.Token, "evals")))

		replies := testserver.DeliverConcurrently(t, 12, fx.f.Handle, signed(fx, verified))

		if len(replies) == 0 || replies[0] != evalflow.TypeJobCreated.String() {
			t.Fatalf("replies %v, want job.created", replies)
		}
		jobs, err := admin.BatchV1().Jobs("evals").List(ctx, metav1.ListOptions{LabelSelector: kube.LabelRun + "=" + runID})
		if err != nil || len(jobs.Items) != 1 || jobs.Items[0].Name != job {
			t.Fatalf("jobs of the run: %v %v", jobs, err)
		}
		if fx.jobs.Created() != 0 {
			t.Fatal("a Kubernetes run also started a local job")
		}
		if b, _ := jobs.Items[0].Marshal(); strings.Contains(string(b), apiKey) {
			t.Fatal("the Job holds the api key in clear")
		}
		sec, err := admin.CoreV1().Secrets("evals").Get(ctx, job+"-key", metav1.GetOptions{})
		if err != nil || string(sec.Data["api_key"]) != apiKey || string(sec.Data["registry_password"]) != registryPassword {
			t.Fatalf("the job's secret: %v", err)
		}
		cm, err := admin.CoreV1().ConfigMaps("evals").Get(ctx, job+"-spec", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var spec evalflow.JobSpec
		if err := json.Unmarshal([]byte(cm.Data["job.json"]), &spec); err != nil {
			t.Fatal(err)
		}
		if r := spec.Results; r == nil || r.Repository != "registry.cluster.test/evalflow/results" || r.Tag != evalflow.StagingTag(runID) ||
			r.Username != "jobs" || r.PasswordFile != kube.RegistryPasswordPath || strings.Contains(cm.Data["job.json"], registryPassword) {
			t.Fatalf("the job's results target %+v: want the cluster's address of the registry, the password only as a file", spec.Results)
		}
		if spec.CallbackURL != "http://broker.cluster.test/evalflow/default" {
			t.Fatalf("the job reports progress to %q, want the broker's address as the cluster reaches it", spec.CallbackURL)
		}
		r, _ := fx.p.Store.Get(ctx, runID)
		if r.Status != evalflow.StatusDeploying || r.Job != job {
			t.Fatalf("run %s job %q", r.Status, r.Job)
		}

		pipelinetest.Update(ctx, fx.p.Store, runID, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusCancelled, time.Now()) })
		for range 2 { // and a duplicate
			if _, err := fx.f.HandleEvent(ctx, signed(fx, cancelled)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := admin.BatchV1().Jobs("evals").Get(ctx, job, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the job after a cancel: %v, want it deleted", err)
		}
		goneWithTheJob(t, admin, job)
		if ttl := fx.p.Redis.TTL(ctx, "evalflow:run:"+runID+":secrets").Val(); ttl <= 0 || ttl > runstore.StopGrace {
			t.Fatalf("the cancelled run's kubeconfig expires in %s, want within %s", ttl, runstore.StopGrace)
		}
	})

	t.Run("without a results registry a Kubernetes run fails, saying why", func(t *testing.T) {
		fx := newFixture(t, t.TempDir(), func(cfg map[string]string) { delete(cfg, "EVALFLOW_REGISTRY") })
		fx.verifiedRun(t, string(k.Kubeconfig(deployer.Token, "evals")))

		reply, err := fx.f.HandleEvent(ctx, signed(fx, verified))

		if err != nil || reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeFailed {
			t.Fatalf("reply %v, %v; want run.failed", reply, err)
		}
		r, _ := fx.p.Store.Get(ctx, runID)
		if r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, "EVALFLOW_REGISTRY") {
			t.Fatalf("run %s: %q", r.Status, r.Message)
		}
		if _, err := admin.BatchV1().Jobs("evals").Get(ctx, job, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a job was created: %v", err)
		}
	})

	t.Run("a cluster that refuses the job fails the run, once", func(t *testing.T) {
		fx := newFixture(t, t.TempDir())
		fx.verifiedRun(t, string(k.Kubeconfig(nobody.Token, "evals")))

		replies := testserver.DeliverConcurrently(t, 4, fx.f.Handle, signed(fx, verified))

		r, _ := fx.p.Store.Get(ctx, runID)
		if r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, "job "+job) || !strings.Contains(r.Message, "the cluster refused it") || !strings.Contains(r.Message, "forbidden") {
			t.Fatalf("run %s %q", r.Status, r.Message)
		}
		if len(replies) != 1 || replies[0] != evalflow.TypeFailed.String() {
			t.Fatalf("replies %v, want one run.failed", replies)
		}
	})
}

// goneWithTheJob waits for the garbage collector to delete a deleted Job's ConfigMap
// and Secret.
func goneWithTheJob(t *testing.T, admin kubernetes.Interface, job string) {
	t.Helper()
	ctx := context.Background()
	testserver.Eventually(t, 30*time.Second, "the job's configmap and secret go with it", func() bool {
		_, e1 := admin.CoreV1().ConfigMaps("evals").Get(ctx, job+"-spec", metav1.GetOptions{})
		_, e2 := admin.CoreV1().Secrets("evals").Get(ctx, job+"-key", metav1.GetOptions{})
		return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2)
	})
}
