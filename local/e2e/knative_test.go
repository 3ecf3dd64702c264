package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/uuid"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/local/deploy"
	"github.com/evalflow/evalflow/local/install"
	"github.com/evalflow/evalflow/local/release"
	"github.com/evalflow/evalflow/runner/sandbox"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/podexec"
)

// onKnative is evalflow as make deploy puts it on the node's Knative: every function
// a Knative Service built by func deploy from its own directory, chained by the real
// broker's Triggers.
// brokerAudience is evalflow's broker's audience in Knative Eventing's OIDC.
const brokerAudience = "eventing.knative.dev/broker/evalflow/evalflow"

type onKnative struct {
	*onNode
	start  string // START_URL
	client *http.Client
	// broker is the broker's ingress, as pods reach it; brokerClient posts to it as a
	// service of evalflow's namespace would, with a token of its account for the
	// broker's audience (Knative Eventing's OIDC: eventing/eventpolicy.yaml).
	broker       string
	brokerClient *http.Client
	// private is the ingress's cluster-local entrypoint (HOST:PORT, a Service named
	// by Host), which pods reach at the node's address.
	private string
	// images maps each function's Service to the image it runs; manifest is the
	// release manifest deployed.
	images, revisions map[string]string
	manifest          []byte
	// deployed is the deploy's configuration, for an upgrade.
	deployed deploy.Config
	// pythonImage is the image of pythonPod's pods, once built.
	pythonImage string
}

func setUpKnative(t *testing.T) *onKnative {
	t.Helper()
	o := setUpNode(t)
	testserver.KnativeEventing(t, o.node)
	in := testserver.KnativeServing(t, o.node)
	ctx := context.Background()
	// Idle functions go to zero within seconds, not the default minute and a half.
	cm, err := o.admin.CoreV1().ConfigMaps(knative.ServingNamespace).Get(ctx, "config-autoscaler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"stable-window": "6s", "scale-to-zero-grace-period": "3s"}
	if _, err := o.admin.CoreV1().ConfigMaps(knative.ServingNamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A stalled run is driven after 20 s, not 2 minutes: the chaos below loses events.
	// make deploy's path: a release of the checkout (every image by digest), installed.
	cfg := deploy.Config{Log: &testLog{t: t}, Release: release.Config{Root: testserver.RepoRoot(), SandboxPython: testserver.SandboxPython(t),
		Env: map[string][]string{"deploy": o.env, "job-watch": {"EVALFLOW_DRIVE_AFTER=20s"}}}}
	if err := deploy.OnNode(&cfg, o.node, in); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	d, err := deploy.Deploy(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deployed in %s; START_URL=%s", time.Since(started).Round(time.Second), d.StartURL)
	if d.OperatorToken == "" {
		t.Fatal("deploy made no operator token")
	}
	// Without a token, start answers 401 through the public ingress, and records nothing.
	resp, err := clusterClient(o.node.DNS, "").Get(d.StartURL + "/evals")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /evals without a token: %d; want 401", resp.StatusCode)
	}
	k := &onKnative{onNode: o, start: d.StartURL, images: d.Images, revisions: d.Revisions, manifest: d.Manifest, deployed: cfg, client: clusterClient(o.node.DNS, d.OperatorToken),
		broker: "http://broker-ingress.knative-eventing.svc.cluster.local/evalflow/evalflow", private: in.Private,
		brokerClient: clusterClient(o.node.DNS, testserver.AccountToken(t, o.admin, deploy.Namespace, "evalflow-e2e", brokerAudience))}
	k.keepLogs(t)
	return k
}

// keepLogs follows the logs of every function's pod, which go with the pod when it
// scales to zero, and shows them if the test fails.
func (k *onKnative) keepLogs(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	var mu sync.Mutex
	var logs bytes.Buffer
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			mu.Lock()
			t.Logf("the functions' logs:\n%s", logs.String())
			mu.Unlock()
		}
	})
	go func() {
		following := map[string]bool{}
		for ctx.Err() == nil {
			pods, err := k.admin.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service"})
			if err == nil {
				for _, p := range pods.Items {
					if following[p.Name] || p.Status.Phase != "Running" {
						continue
					}
					following[p.Name] = true
					go func(pod string) {
						r, err := k.admin.CoreV1().Pods(deploy.Namespace).GetLogs(pod, &corev1.PodLogOptions{Container: "user-container", Follow: true}).Stream(ctx)
						if err != nil {
							return
						}
						defer r.Close()
						b, _ := io.ReadAll(r)
						mu.Lock()
						fmt.Fprintf(&logs, "--- %s\n%s", pod, b)
						mu.Unlock()
					}(p.Name)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
}

// testLog writes a deploy's output to the test's log, a line at a time.
type testLog struct {
	t  *testing.T
	mu sync.Mutex
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if strings.TrimSpace(line) != "" {
			l.t.Log(line)
		}
	}
	return len(p), nil
}

// clusterClient reaches what this machine reaches of the node as a user would: a
// Knative URL NAME.NAMESPACE.localhost on loopback (RFC 6761, as curl does), and
// cluster names through the cluster's DNS (Services' addresses route on the node).
// clusterClient resolves names with the cluster's DNS (and *.localhost on loopback),
// and sends token ("" for none) as every request's bearer token.
func clusterClient(dns, token string) *http.Client {
	dialer := &net.Dialer{Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(dns, "53"))
	}}}
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		if strings.HasSuffix(host, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return dialer.DialContext(ctx, network, addr)
	}}
	return &http.Client{Timeout: time.Minute, Transport: bearer{token: token, next: transport}}
}

// bearer sends its token with each request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(r)
}

// The pipeline as users deploy it, on Knative on the node: a run POSTed to start
// through the ingress and one sent as a CloudEvent to the broker's ingress go through
// every step by the real Triggers, their Jobs run as pods, their artifacts pull back
// with the oras CLI, and the caller's own Trigger on its evaltopic receives every
// notification. Sent again, out of order, the same events change nothing. Functions
// scaled to zero wake for the next event; an event a Trigger cannot deliver fails its
// run through the dead-letter sink.
func TestThePipelineOnKnative(t *testing.T) {
	k := setUpKnative(t)
	ctx := context.Background()
	model := testserver.OllamaOn(t, k.node.Address, 4)
	topic := "caller-" + uuid.NewString()[:8]
	caller := testserver.NewSinkOn(t, k.node.Address)
	all := testserver.NewSinkOn(t, k.node.Address)
	k.trigger(t, "caller", fmt.Sprintf("filters: [{exact: {%s: %s}}]", evalflow.ExtCallerTopic, topic), caller.URL)
	k.trigger(t, "everything", "", all.URL)

	request := func(limit float64) evalflow.Request {
		return evalflow.Request{EvalRequestID: uuid.NewString(), ModelName: testserver.Model, BaseURL: model + "/v1",
			APIKey: "sk-knative-" + uuid.NewString(), Source: "knative-test", SourceTopic: topic,
			Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: limit}}}
	}
	// One run through the public ingress, as a caller POSTs it.
	posted := request(4)
	k.post(t, posted)
	first := k.waitEnded(t, posted.EvalRequestID)
	if first.Status != evalflow.StatusSucceeded {
		t.Fatalf("the POSTed run ended %s: %s", first.Status, first.Message)
	}

	t.Run("the Job ran as a pod of the node and its artifact pulls back", func(t *testing.T) {
		pods, err := k.admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + first.Job})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("no pod of Job %s: %v", first.Job, err)
		}
		dir := k.orasPull(t, first.Artifact.Reference)
		var results struct {
			Results map[string]map[string]any `json:"results"`
		}
		raw, err := os.ReadFile(filepath.Join(dir, evalflow.ResultsFile))
		if err != nil || json.Unmarshal(raw, &results) != nil || results.Results["mmlu_anatomy_generative"] == nil {
			t.Fatalf("pulled %s: %v %.300s", evalflow.ResultsFile, err, raw)
		}
		if bytes.Contains(raw, []byte(posted.APIKey)) {
			t.Fatal("the artifact holds the api_key")
		}
		// start reads the same artifact back from the cluster's registry for the
		// results API and page, and the page itself answers through the ingress.
		for path, want := range map[string]string{
			"/evals/" + first.ID + "/results":         `"task":"mmlu_anatomy_generative"`,
			"/evals/" + first.ID + "/samples?limit=1": `"total":4`,
			"/evals/" + first.ID + "/results.json":    `"mmlu_anatomy_generative"`,
			"/ui/runs/" + first.ID:                    `/ui/static/app.js`,
		} {
			resp, err := k.client.Get(k.start + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
				t.Errorf("GET %s: %d %.300s; want %s", path, resp.StatusCode, b, want)
			}
		}
	})
	t.Run("only start answers from outside the cluster", func(t *testing.T) {
		for _, step := range evalflow.Steps {
			u := strings.Replace(k.start, "evalflow-start.", "evalflow-"+string(step.ID)+".", 1) + "/health/readiness"
			resp, err := k.client.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if public := resp.StatusCode == http.StatusOK; public != (step.ID == evalflow.StepStart) {
				t.Errorf("%s from this machine: %d", u, resp.StatusCode)
			}
		}
	})
	t.Run("each function runs the release's image of it: by digest, built for the node's platform", func(t *testing.T) {
		for _, step := range evalflow.Steps {
			image := k.images["evalflow-"+string(step.ID)]
			ref, err := name.ParseReference(image, name.Insecure)
			if _, pinned := ref.(name.Digest); err != nil || !pinned {
				t.Fatalf("%s: image %q is not named by digest (%v)", step.ID, image, err)
			}
			img, err := remote.Image(ref, remote.WithContext(ctx))
			if err != nil {
				t.Fatalf("%s: %s: %v", step.ID, image, err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := cfg.OS+"/"+cfg.Architecture, "linux/"+runtime.GOARCH; got != want || cfg.Config.Entrypoint[0] != "/evalflow-"+string(step.ID) {
				t.Errorf("%s: %s is for %s, runs %v; want %s, /evalflow-%s", step.ID, image, got, cfg.Config.Entrypoint, want, step.ID)
			}
		}
	})
	t.Run("the caller's Trigger received every step's notification", func(t *testing.T) {
		k.wantNotified(t, caller, posted.EvalRequestID)
	})
	t.Run("the Job's runner reported to the broker, with its pod's token for it", func(t *testing.T) {
		reported := map[string]bool{}
		for _, ev := range all.Got("/") {
			if ev.Subject() == posted.EvalRequestID {
				reported[ev.Type()] = true
			}
		}
		for _, typ := range []evalflow.EventType{evalflow.TypeJobProgress, evalflow.TypeJobFinished} {
			if !reported[string(typ)] {
				t.Errorf("the broker carried no %s of the run: the runner's reports were refused", typ)
			}
		}
	})

	t.Run("sent again out of order, the same events change nothing", func(t *testing.T) {
		var mine []event.Event
		for _, ev := range all.Got("/") {
			if ev.Subject() == posted.EvalRequestID {
				mine = append(mine, ev)
			}
		}
		if len(mine) < 6 {
			t.Fatalf("the broker carried %d events of the run", len(mine))
		}
		notified := caller.Got("/")
		slices.Reverse(mine)
		for _, ev := range mine {
			k.send(t, ev)
		}
		// Every replay is delivered (the everything Trigger sees each twice) before
		// the run is read again.
		testserver.Eventually(t, time.Minute, "the replayed events delivered", func() bool {
			n := 0
			for _, ev := range all.Got("/") {
				if ev.Subject() == posted.EvalRequestID {
					n++
				}
			}
			return n >= 2*len(mine)
		})
		time.Sleep(5 * time.Second) // the functions' answers to them
		again := k.get(t, posted.EvalRequestID)
		if again.Status != first.Status || !again.UpdatedAt.Equal(first.UpdatedAt) || again.Artifact.Digest != first.Artifact.Digest {
			t.Errorf("the run changed: %s %s %s, was %s %s %s", again.Status, again.UpdatedAt, again.Artifact.Digest,
				first.Status, first.UpdatedAt, first.Artifact.Digest)
		}
		seen := map[string]bool{}
		for _, ev := range notified {
			seen[ev.ID()] = true
		}
		for _, ev := range caller.Got("/") {
			if !seen[ev.ID()] && ev.Subject() == posted.EvalRequestID {
				var n evalflow.Notification
				json.Unmarshal(ev.Data(), &n)
				t.Errorf("a new notification after the replay: %s %s %s", n.Step, n.Status, n.Message)
			}
		}
		if n := k.jobsNamed(t, "", first.Job); n > 1 {
			t.Errorf("%d Jobs of the run", n)
		}
	})

	t.Run("functions scaled to zero wake for a run.requested sent to the broker", func(t *testing.T) {
		testserver.Eventually(t, 3*time.Minute, "every function at zero pods", func() bool {
			pods, err := k.admin.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service"})
			return err == nil && len(pods.Items) == 0
		})
		sent := request(2)
		data, _ := json.Marshal(sent)
		ev := cloudevents.NewEvent()
		ev.SetID(uuid.NewString())
		ev.SetSource("knative-test")
		ev.SetType(string(evalflow.TypeRequested))
		ev.SetSubject(sent.EvalRequestID)
		_ = ev.SetData(cloudevents.ApplicationJSON, data)
		woke := time.Now()
		k.send(t, ev)
		r := k.waitEnded(t, sent.EvalRequestID)
		if r.Status != evalflow.StatusSucceeded {
			t.Fatalf("the run sent to the broker ended %s: %s", r.Status, r.Message)
		}
		t.Logf("run.requested to succeeded, every function from zero: %s", time.Since(woke).Round(time.Millisecond))
		k.wantNotified(t, caller, sent.EvalRequestID)
		k.orasPull(t, r.Artifact.Reference)
	})

	t.Run("a pod of another namespace reaches neither Redis, the registry nor a function; a Job's reaches the registry alone", func(t *testing.T) {
		// Pods with python3 and nothing of evalflow's: one in a namespace of its own, one
		// in the Job namespace labelled as a runner is.
		intruder := func(ns string) *podexec.Pod {
			return k.pythonPod(t, ns, "intruder", map[string]string{"app.kubernetes.io/part-of": "evalflow", kube.LabelComponent: "intruder"})
		}
		testserver.Namespace(t, k.admin, "intruder")
		for ns, want := range map[string]map[string]string{
			"intruder":          {"redis": "failed: TimeoutError", "registry": "failed: TimeoutError", "start": "failed: TimeoutError", "start's queue-proxy": "failed: TimeoutError", "the API server": "passed"},
			deploy.JobNamespace: {"redis": "failed: TimeoutError", "registry": "passed", "start": "failed: TimeoutError", "start's queue-proxy": "failed: TimeoutError", "the API server": "passed"},
		} {
			pod := intruder(ns)
			targets := map[string]string{"redis": k.serviceIP(t, "redis") + ":6379", "registry": k.serviceIP(t, "registry") + ":5000",
				"the API server": "10.96.0.1:443"}
			start := k.startPod(t)
			targets["start"], targets["start's queue-proxy"] = start+":8080", start+":8012"
			got := connects(t, pod, targets)
			for name, w := range want {
				if !strings.HasPrefix(got[name], w) {
					t.Errorf("from %s, a connection to %s (%s): %s; want %s", ns, name, targets[name], got[name], w)
				}
			}
			if ns != deploy.JobNamespace {
				continue
			}
			// The registry a Job's pod reaches takes neither a push nor a pull without its
			// password (a Job gets it in its Secret, for its run's results alone).
			registry := "http://" + targets["registry"] + "/v2/evalflow/results"
			got = sendFrom(t, pod, map[string]podRequest{
				"a push":          {method: http.MethodPost, url: registry + "/blobs/uploads/"},
				"a pull":          {method: http.MethodGet, url: registry + "/tags/list"},
				"a pull by token": {method: http.MethodGet, url: registry + "/tags/list", header: map[string]string{"Authorization": "Basic ZXZhbGZsb3c6Z3Vlc3M="}},
			})
			for name, w := range map[string]string{"a push": "failed: Status401", "a pull": "failed: Status401", "a pull by token": "failed: Status401"} {
				if got[name] != w {
					t.Errorf("from %s, %s at the registry without its password: %s; want %s", ns, name, got[name], w)
				}
			}
		}
	})

	t.Run("forged events from a pod of another namespace are refused: by the broker, by start at any Host, by each step; no run changes", func(t *testing.T) {
		testserver.Namespace(t, k.admin, "forger")
		exec := k.pythonPod(t, "forger", "forger", nil)
		// The forger's own account's tokens, as any pod may have one projected.
		own := func(audience string) string {
			return testserver.AccountToken(t, k.admin, "forger", "default", audience)
		}
		before := k.get(t, posted.EvalRequestID)
		forged := request(3)
		requested, _ := json.Marshal(forged)
		started, _ := json.Marshal(evalflow.RunRef{RunID: posted.EvalRequestID})
		ce := func(typ evalflow.EventType, subject string) map[string]string {
			return map[string]string{"Ce-Specversion": "1.0", "Ce-Id": uuid.NewString(), "Ce-Source": "/forger", "Ce-Type": string(typ),
				"Ce-Subject": subject, "Content-Type": "application/json"}
		}
		with := func(h map[string]string, kv ...string) map[string]string {
			h = maps.Clone(h)
			for i := 0; i+1 < len(kv); i += 2 {
				h[kv[i]] = kv[i+1]
			}
			return h
		}
		private := "http://" + net.JoinHostPort(k.node.Address, portOf(k.private))
		reqs := map[string]podRequest{
			"the broker, no token": {url: k.broker, header: ce(evalflow.TypeRequested, forged.EvalRequestID), body: requested},
			"the broker, the forger's token for it": {url: k.broker, header: with(ce(evalflow.TypeRequested, forged.EvalRequestID),
				"Authorization", "Bearer "+own(brokerAudience)), body: requested},
			"start at its cluster-local Host, no token": {url: private + "/", header: with(ce(evalflow.TypeRequested, forged.EvalRequestID),
				"Host", "evalflow-start.evalflow.svc.cluster.local"), body: requested},
			"start at its cluster-local Host, the forger's token for start": {url: private + "/", header: with(ce(evalflow.TypeRequested, forged.EvalRequestID),
				"Host", "evalflow-start.evalflow.svc.cluster.local", "Authorization", "Bearer "+own("serving.knative.dev/service/evalflow/evalflow-start")), body: requested},
		}
		want := map[string]string{
			"the broker, no token": "failed: Status401", "the broker, the forger's token for it": "failed: Status403",
			"start at its cluster-local Host, no token": "failed: Status401", "start at its cluster-local Host, the forger's token for start": "failed: Status401",
		}
		// Each other step, at its cluster-local Host, with the event it takes and the
		// forger's token for its audience.
		for step, typ := range map[string]evalflow.EventType{"verify": evalflow.TypeStarted, "deploy": evalflow.TypeVerified,
			"job-watch": evalflow.TypeJobCreated, "artifact": evalflow.TypeResultsReady} {
			name := step + ", the forger's token for " + step
			reqs[name] = podRequest{url: private + "/", header: with(ce(typ, posted.EvalRequestID), "Host", "evalflow-"+step+".evalflow.svc.cluster.local",
				"Authorization", "Bearer "+own("serving.knative.dev/service/evalflow/evalflow-"+step)), body: started}
			want[name] = "failed: Status401"
		}
		got := sendFrom(t, exec, reqs)
		for name, want := range want {
			if got[name] != want {
				t.Errorf("%s: %s; want %s", name, got[name], want)
			}
		}
		time.Sleep(3 * time.Second)
		if r := k.get(t, forged.EvalRequestID); r != nil {
			t.Errorf("the forged run.requested recorded run %s (%s)", r.ID, r.Status)
		}
		if after := k.get(t, posted.EvalRequestID); after == nil || before == nil || !after.UpdatedAt.Equal(before.UpdatedAt) || after.Status != before.Status {
			t.Errorf("the run changed under forged events: %+v, was %+v", after, before)
		}
	})

	t.Run("an event a Trigger cannot deliver fails its run through the dead-letter sink", func(t *testing.T) {
		// The run's cluster answers verify, and refuses the deploy step's pods: each
		// delivery of run.verified fails, the Trigger retries, then dead-letters it.
		kubeconfig := k.refusingDeploy(t)
		r := request(1)
		r.Kubeconfig = kubeconfig
		k.post(t, r)
		got := k.waitEnded(t, r.EvalRequestID)
		if got.Status != evalflow.StatusFailed || !strings.Contains(got.Message, evalflow.TypeVerified.String()+" could not be delivered") {
			t.Fatalf("the run ended %s: %q; want failed by the dead letter of %s", got.Status, got.Message, evalflow.TypeVerified)
		}
		// The dead letter is kept, and listed.
		resp, err := k.client.Get(k.start + "/deadletters?run_id=" + r.EvalRequestID)
		if err != nil {
			t.Fatal(err)
		}
		var kept struct {
			DeadLetters []evalflow.DeadLetter `json:"dead_letters"`
		}
		json.NewDecoder(resp.Body).Decode(&kept)
		resp.Body.Close()
		if len(kept.DeadLetters) != 1 || kept.DeadLetters[0].Type != evalflow.TypeVerified || !strings.Contains(kept.DeadLetters[0].Destination, "evalflow-deploy") {
			t.Fatalf("dead letters listed: %+v; want the one run.verified to deploy", kept.DeadLetters)
		}
	})

	t.Run("a part killed mid-run comes back and the run ends, succeeded or saying why: one Job, no step done twice", func(t *testing.T) {
		// Each part is killed once the run's Job is created, or (early) as soon as start
		// has answered, while the run goes through the steps before its Job.
		for _, fault := range []struct {
			part, namespace, selector string
			early                     bool
			restart                   string // a process of the node restarted instead
		}{
			{"Redis", deploy.Namespace, "app.kubernetes.io/name=redis", false, ""},
			{"the registry", deploy.Namespace, "app.kubernetes.io/name=registry", false, ""},
			{"start", deploy.Namespace, "serving.knative.dev/service=evalflow-start", true, ""},
			{"verify", deploy.Namespace, "serving.knative.dev/service=evalflow-verify", true, ""},
			{"deploy", deploy.Namespace, "serving.knative.dev/service=evalflow-deploy", true, ""},
			{"job-watch", deploy.Namespace, "serving.knative.dev/service=evalflow-job-watch", false, ""},
			{"artifact", deploy.Namespace, "serving.knative.dev/service=evalflow-artifact", false, ""},
			{"the in-memory channel's dispatcher", knative.Namespace, "messaging.knative.dev/channel=in-memory-channel,messaging.knative.dev/role=dispatcher", false, ""},
			{"the broker's ingress", knative.Namespace, "eventing.knative.dev/brokerRole=ingress", false, ""},
			{"the broker's filter", knative.Namespace, "eventing.knative.dev/brokerRole=filter", false, ""},
			{"the Job's pod", deploy.JobNamespace, batchv1.JobNameLabel + "=", false, ""}, // + the run's Job
			{"containerd, restarted", "", "", false, "containerd"},
			{"the kubelet, restarted", "", "", false, "kubelet"},
		} {
			t.Run(fault.part, func(t *testing.T) {
				r := request(30) // runs for seconds: the fault comes while it runs
				k.post(t, r)
				var running *evalflow.Run
				testserver.Eventually(t, 2*time.Minute, "the run running", func() bool {
					running = k.get(t, r.EvalRequestID)
					return running != nil && (fault.early || running.Status == evalflow.StatusRunning || running.Status.Terminal())
				})
				if running.Status.Terminal() {
					t.Fatalf("the run ended %s before the fault: nothing was proved", running.Status)
				}
				selector := fault.selector
				if strings.HasSuffix(selector, "=") {
					selector += running.Job
				}
				began := time.Now()
				var killed []corev1.Pod
				if fault.restart != "" { // systemctl restart, as on a node of a cluster
					if err := k.node.Restart(ctx, fault.restart, nil); err != nil {
						t.Fatal(err)
					}
				} else {
					pods, err := k.admin.CoreV1().Pods(fault.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range pods.Items { // kubectl delete pod --force
						_ = k.admin.CoreV1().Pods(fault.namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
					}
					killed = pods.Items
				}
				ended := k.waitEnded(t, r.EvalRequestID)
				t.Logf("%s: %d pods killed; the run ended %s %q, %s after", fault.part, len(killed), ended.Status, ended.Message,
					time.Since(began).Round(time.Second))
				switch {
				case ended.Status == evalflow.StatusSucceeded:
					k.orasPull(t, ended.Artifact.Reference)
				case ended.Status != evalflow.StatusFailed || ended.Message == "":
					t.Fatalf("the run ended %s %q; want it succeeded, or failed saying why", ended.Status, ended.Message)
				}
				k.wantDoneOnce(t, caller, ended)
			})
		}
	})

	t.Run("upgraded with ten runs in flight: each ends succeeded, once; a run of the old release stays readable", func(t *testing.T) {
		// Another release, as make release builds it ahead: the same checkout stamped
		// with another version gives other binaries, so every image and revision is new.
		cfg := k.deployed.Release
		cfg.Log, cfg.Version = &testLog{t: t}, "upgrade-"+uuid.NewString()[:8]
		rel, err := release.Build(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for range 10 {
			r := request(30) // runs for seconds: the upgrade comes while they run
			k.post(t, r)
			ids = append(ids, r.EvalRequestID)
		}
		inFlight := func() int {
			n := 0
			for _, id := range ids {
				if r := k.get(t, id); r != nil && !r.Status.Terminal() {
					n++
				}
			}
			return n
		}
		before := inFlight()
		if before < 5 {
			t.Fatalf("%d of the ten runs in flight as the upgrade begins: nothing would be proved", before)
		}
		began := time.Now()
		d, err := install.Install(ctx, install.Config{Kubeconfig: k.deployed.Kubeconfig, Manifest: rel.Manifest,
			IngressPort: k.deployed.IngressPort, Log: &testLog{t: t}})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("upgraded in %s with %d runs in flight; %d still in flight after", time.Since(began).Round(time.Second), before, inFlight())
		for svc, image := range d.Images {
			if image == k.images[svc] || d.Revisions[svc] == k.revisions[svc] {
				t.Errorf("%s still runs %s (%s) after the upgrade", svc, image, d.Revisions[svc])
			}
		}
		k.images, k.revisions, k.manifest = d.Images, d.Revisions, rel.Manifest
		for _, id := range ids {
			r := k.waitEnded(t, id)
			if r.Status != evalflow.StatusSucceeded {
				t.Errorf("run %s across the upgrade ended %s: %s", id, r.Status, r.Message)
				continue
			}
			k.wantDoneOnce(t, caller, r)
		}
		t.Logf("the ten runs ended %s after the upgrade began", time.Since(began).Round(time.Second))
		old := k.get(t, posted.EvalRequestID)
		if old == nil || old.Status != evalflow.StatusSucceeded || old.Summary == nil {
			t.Fatalf("the first run, sealed by the old release, reads %+v", old)
		}
		resp, err := k.client.Get(k.start + "/evals/" + posted.EvalRequestID + "/results.json")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("the first run's results.json after the upgrade: %d", resp.StatusCode)
		}
	})

	t.Run("idle, no function pod: the last run's tick removes the tick, and nothing wakes them", func(t *testing.T) {
		kc, err := os.ReadFile(k.node.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		c, err := knative.Connect(kc)
		if err != nil {
			t.Fatal(err)
		}
		testserver.Eventually(t, 3*time.Minute, "job-watch's tick removed", func() bool {
			_, err := c.Get(ctx, "sources.knative.dev/v1", "PingSource", deploy.Namespace, evalflow.Tick.Name)
			return apierrors.IsNotFound(err)
		})
		functionPods := func() []string {
			pods, err := k.admin.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service"})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range pods.Items {
				names = append(names, p.Name)
			}
			return names
		}
		testserver.Eventually(t, 2*time.Minute, "every function at zero pods", func() bool { return len(functionPods()) == 0 })
		// Longer than a tick's period: no tick, nothing else, wakes a function.
		for end := time.Now().Add(75 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
			if pods := functionPods(); len(pods) > 0 {
				t.Fatalf("with no run in flight, function pods came up: %v", pods)
			}
		}
	})
	t.Run("uninstalled, nothing of evalflow is left; the manifest applied with kubectl and installed again runs a run", func(t *testing.T) {
		k.uninstallAndInstallAgain(t, request(2))
	})
}

// uninstallAndInstallAgain takes evalflow off the node as a user does (evalflow
// uninstall -delete-data), checks nothing of it is left but Knative's own settings,
// then applies the release manifest with kubectl, lets evalflow install make its
// Secrets and wait, and POSTs req to the new START_URL: it succeeds.
func (k *onKnative) uninstallAndInstallAgain(t *testing.T, req evalflow.Request) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "evalflow-release") // kubectl -f takes a comma as a list's, and subtests' names have them
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	manifest := filepath.Join(dir, "evalflow.yaml")
	if err := os.WriteFile(manifest, k.manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	evalflowCmd := testserver.Build(t, "github.com/evalflow/evalflow/local/cmd/evalflow")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s%s", filepath.Base(name), args, err, out, stderr.Bytes())
		}
		return string(out)
	}
	started := time.Now()
	run(evalflowCmd, "uninstall", "-f", manifest, "-kubeconfig", k.node.Kubeconfig, "-delete-data")
	t.Logf("uninstalled in %s", time.Since(started).Round(time.Second))
	for _, ns := range []string{deploy.Namespace, deploy.JobNamespace} {
		if _, err := k.admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace %s is still there: %v", ns, err)
		}
	}
	partOf := metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=evalflow"}
	roles, err1 := k.admin.RbacV1().ClusterRoles().List(ctx, partOf)
	bindings, err2 := k.admin.RbacV1().ClusterRoleBindings().List(ctx, partOf)
	if err := errors.Join(err1, err2); err != nil || len(roles.Items)+len(bindings.Items) != 0 {
		t.Errorf("evalflow's cluster roles or bindings are left: %v, %v (%v)", roles, bindings, err)
	}
	if _, err := k.admin.CoreV1().ConfigMaps(knative.Namespace).Get(ctx, "config-features", metav1.GetOptions{}); err != nil {
		t.Errorf("uninstall took Knative's feature flags: %v", err)
	}

	started = time.Now()
	kubectl := filepath.Join(localserver.KubeBinDir(), "kubectl")
	run(kubectl, "--kubeconfig", k.node.Kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", manifest)
	out := run(evalflowCmd, "install", "-f", manifest, "-kubeconfig", k.node.Kubeconfig, "-ingress-port", portOf(strings.TrimPrefix(k.start, "http://")))
	t.Logf("installed again in %s:\n%s", time.Since(started).Round(time.Second), out)
	var startURL, token string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "START_URL="); ok {
			startURL = v
		} else if v, ok := strings.CutPrefix(line, "OPERATOR_TOKEN="); ok {
			token = v
		}
	}
	if startURL != k.start || token == "" || token == k.client.Transport.(bearer).token {
		t.Fatalf("installed again: START_URL %q (was %q), a new operator's token %v", startURL, k.start, token != "")
	}
	again := *k
	again.client = clusterClient(k.node.DNS, token)
	again.post(t, req)
	if r := again.waitEnded(t, req.EvalRequestID); r.Status != evalflow.StatusSucceeded {
		t.Fatalf("the run on evalflow installed again ended %s: %s", r.Status, r.Message)
	}
}

// post POSTs req to start through the public ingress, as a caller does, and wants it
// accepted.
func (k *onKnative) post(t *testing.T, req evalflow.Request) {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := k.client.Post(k.start+"/evals/start", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s/evals/start: %d %s", k.start, resp.StatusCode, b)
	}
}

// wantDoneOnce checks that run r, ended, had one Job, and that each step told the
// caller it succeeded once at most (a copy has the same id); a succeeded run, every
// step.
func (k *onKnative) wantDoneOnce(t *testing.T, caller *testserver.Sink, r *evalflow.Run) {
	t.Helper()
	if n := k.jobsNamed(t, deploy.JobNamespace, r.Job); n != 1 {
		t.Errorf("run %s: %d Jobs", r.ID, n)
	}
	if r.Status == evalflow.StatusSucceeded {
		k.wantNotified(t, caller, r.ID)
	}
	done := map[evalflow.StepID]map[string]bool{}
	for _, ev := range caller.Got("/") {
		var note evalflow.Notification
		if json.Unmarshal(ev.Data(), &note) == nil && note.RunID == r.ID && note.Status == evalflow.NoteSucceeded {
			if done[note.Step] == nil {
				done[note.Step] = map[string]bool{}
			}
			done[note.Step][ev.ID()] = true
		}
	}
	for step, ids := range done {
		if len(ids) != 1 {
			t.Errorf("run %s: %s succeeded %d times", r.ID, step, len(ids))
		}
	}
}

// trigger adds a Trigger on evalflow's broker that sends what filters lets through
// to uri, and waits until it is Ready.
func (k *onKnative) trigger(t *testing.T, name, filters, uri string) {
	t.Helper()
	objs, err := knative.Objects(fmt.Sprintf(`apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s, namespace: %s}
spec:
  broker: evalflow
  %s
  subscriber: {uri: %q}
`, name, deploy.Namespace, filters, uri))
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := os.ReadFile(k.node.Kubeconfig)
	c, err := knative.Connect(kc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(context.Background(), objs...); err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(context.Background(), time.Minute, objs...); err != nil {
		t.Fatal(err)
	}
}

// send posts ev to the broker's ingress, as a service of the cluster would.
func (k *onKnative) send(t *testing.T, ev event.Event) {
	t.Helper()
	b, _ := json.Marshal(ev)
	resp, err := k.brokerClient.Post(k.broker, "application/cloudevents+json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("the broker took %s: %d", ev.Type(), resp.StatusCode)
	}
}

// get reads run id through start's public URL: nil while it is not there, or while
// start does not answer.
func (k *onKnative) get(t *testing.T, id string) *evalflow.Run {
	t.Helper()
	resp, err := k.client.Get(k.start + "/evals/" + id)
	if err != nil { // start's pod killed under the request: the caller asks again
		t.Logf("GET /evals/%s: %v", id, err)
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // not there yet, or start coming back
		return nil
	}
	var r evalflow.Run
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// waitEnded reads the run through start's public URL until it ends.
func (k *onKnative) waitEnded(t *testing.T, id string) *evalflow.Run {
	t.Helper()
	var r *evalflow.Run
	testserver.Eventually(t, 4*time.Minute, "run "+id+" ended", func() bool {
		r = k.get(t, id)
		return r != nil && r.Status.Terminal()
	})
	return r
}

// wantNotified checks the caller heard of each step of a succeeded run.
func (k *onKnative) wantNotified(t *testing.T, caller *testserver.Sink, id string) {
	t.Helper()
	steps := map[evalflow.StepID]bool{}
	testserver.Eventually(t, time.Minute, "every step notified", func() bool {
		for _, ev := range caller.Got("/") {
			var n evalflow.Notification
			if cloudevent.TypeOf(ev) == evalflow.TypeNotification && json.Unmarshal(ev.Data(), &n) == nil && n.RunID == id && n.Status == evalflow.NoteSucceeded {
				steps[n.Step] = true
			}
		}
		return len(steps) == len(evalflow.Steps)
	})
}

// orasPull pulls an artifact from the results registry in the cluster, with the
// oras CLI and the registry's generated credentials.
func (k *onKnative) orasPull(t *testing.T, ref string) string {
	t.Helper()
	ctx := context.Background()
	svc, err := k.admin.CoreV1().Services(deploy.Namespace).Get(ctx, "registry", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := k.admin.CoreV1().Secrets(deploy.Namespace).Get(ctx, "evalflow-registry", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The reference names the registry as pods do; this machine reaches its Service.
	_, path, _ := strings.Cut(ref, "/")
	dir := t.TempDir()
	cmd := exec.Command(testserver.Oras(t), "pull", net.JoinHostPort(svc.Spec.ClusterIP, "5000")+"/"+path, "-o", dir,
		"--plain-http", "-u", string(secret.Data["username"]), "--password-stdin")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.Stdin = bytes.NewReader(secret.Data["password"])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("oras pull %s: %v\n%s", ref, err, out)
	}
	return dir
}

// refusingDeploy returns a kubeconfig for the node through a TCP proxy on the node
// address that refuses connections from the deploy function's pods and passes every
// other: a cluster the deploy step cannot reach. (A fault only a proxy can cause
// here: the node's API server serves every pod.)
func (k *onKnative) refusingDeploy(t *testing.T) string {
	t.Helper()
	kc, err := os.ReadFile(k.node.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(k.node.Address, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	upstream := strings.TrimPrefix(k.node.API, "https://")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go proxyUnlessDeploy(k.admin, c, upstream)
		}
	}()
	for _, cluster := range cfg.Clusters {
		cluster.Server = "https://" + l.Addr().String()
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func proxyUnlessDeploy(admin kubernetes.Interface, c net.Conn, upstream string) {
	defer c.Close()
	peer, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	pods, err := admin.CoreV1().Pods(deploy.Namespace).List(context.Background(),
		metav1.ListOptions{LabelSelector: "serving.knative.dev/service=evalflow-deploy"})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		if p.Status.PodIP == peer {
			return
		}
	}
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer u.Close()
	go io.Copy(u, c)
	io.Copy(c, u)
}

// serviceIP is the cluster address of evalflow's Service name.
func (k *onKnative) serviceIP(t *testing.T, name string) string {
	t.Helper()
	svc, err := k.admin.CoreV1().Services(deploy.Namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

// startPod asks start for a run list through the ingress, which wakes it from zero,
// and returns the address of its running pod (up for seconds after).
func (k *onKnative) startPod(t *testing.T) string {
	t.Helper()
	resp, err := k.client.Get(k.start + "/evals?limit=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	pods, err := k.admin.CoreV1().Pods(deploy.Namespace).List(context.Background(), metav1.ListOptions{LabelSelector: "serving.knative.dev/service=evalflow-start"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			return p.Status.PodIP
		}
	}
	t.Fatal("no running pod of start after a request to it")
	return ""
}

// connects runs, in pod's sandbox program, one connection to each target (name →
// HOST:PORT), and says what became of each: "passed" for a connection made.
func connects(t *testing.T, pod *podexec.Pod, targets map[string]string) map[string]string {
	t.Helper()
	programs := map[string]string{}
	for name, target := range targets {
		host, port, _ := net.SplitHostPort(target)
		programs[name] = fmt.Sprintf("import socket\nsocket.create_connection((%q, %s), timeout=2).close()\n", host, port)
	}
	return runPrograms(t, pod, sandbox.DefaultLimits, programs)
}

// runPrograms runs each Python program in pod (the sandbox program, with limits) and
// returns each one's outcome, by name.
func runPrograms(t *testing.T, pod *podexec.Pod, limits sandbox.Limits, programs map[string]string) map[string]string {
	t.Helper()
	var names []string
	batch := sandbox.Batch{Limits: sandbox.Of(limits)}
	for name, program := range programs {
		names = append(names, name)
		batch.Programs = append(batch.Programs, program)
	}
	in, _ := json.Marshal(batch)
	var out bytes.Buffer
	if err := pod.Exec(context.Background(), []string{evalflow.SandboxProgram, "-batch", "-"}, bytes.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	results, err := sandbox.ReadLines(&out, len(names))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for i, r := range results {
		got[names[i]] = r.Outcome
	}
	return got
}

// pythonPod runs a pod with python3 and nothing of evalflow's (the sandbox image) in
// namespace ns, labelled labels, until the test ends, and execs in it.
func (k *onKnative) pythonPod(t *testing.T, ns, name string, labels map[string]string) *podexec.Pod {
	t.Helper()
	if k.pythonImage == "" { // built and pushed once
		ref := k.node.Registry + "/evalflow/intruder"
		k.pythonImage = ref + "@" + testserver.SandboxImage(t, ref, evalflow.SandboxProgram)
	}
	kc, err := os.ReadFile(k.node.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	pod := kube.SandboxPod(name, k.pythonImage, 10*time.Minute)
	if labels != nil {
		pod.Labels = labels
	}
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{} // the node's 2 CPUs are requested by Knative and the functions
	testserver.RunPod(t, k.admin, ns, pod)
	t.Cleanup(func() {
		_ = k.admin.CoreV1().Pods(ns).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	exec, err := kube.PodExec(kc, ns, pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	return exec
}

// podRequest is a request a pod sends: method (POST when empty) to url, with header
// (Host among them), and body.
type podRequest struct {
	url    string
	header map[string]string
	body   []byte
	method string
}

// sendFrom sends each request from pod (python3's urllib, in the sandbox program) and
// returns each one's outcome: "passed" for a 2xx answer, "failed: StatusNNN" for
// another, "failed: EXCEPTION" when none came.
func sendFrom(t *testing.T, pod *podexec.Pod, reqs map[string]podRequest) map[string]string {
	t.Helper()
	programs := map[string]string{}
	for name, r := range reqs {
		header, _ := json.Marshal(r.header)
		if r.header == nil {
			header = []byte("{}")
		}
		method, data := cmp.Or(r.method, http.MethodPost), "None"
		if r.body != nil {
			data = fmt.Sprintf("bytes.fromhex(%q)", hex.EncodeToString(r.body))
		}
		programs[name] = fmt.Sprintf(`import json, urllib.request, urllib.error
req = urllib.request.Request(%q, data=%s, headers=json.loads(%q), method=%q)
try:
    urllib.request.urlopen(req, timeout=50).close()
except urllib.error.HTTPError as e:
    raise type("Status%%d" %% e.code, (Exception,), {})()
`, r.url, data, header, method)
	}
	// A function at zero wakes for the post: a minute for its answer.
	limits := sandbox.DefaultLimits
	limits.Wall, limits.CPU = time.Minute, 10*time.Second
	return runPrograms(t, pod, limits, programs)
}

// portOf is the port of HOST:PORT.
func portOf(hostport string) string {
	_, port, _ := net.SplitHostPort(hostport)
	return port
}

// jobsNamed counts the Jobs named name in namespace ns ("": every namespace).
func (k *onKnative) jobsNamed(t *testing.T, ns, name string) int {
	t.Helper()
	jobs, err := k.admin.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, j := range jobs.Items {
		if j.Name == name {
			n++
		}
	}
	return n
}
