package manifests

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	eventingv1alpha1 "knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/eventing/pkg/eventfilter"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	kindv1alpha4 "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/local/broker"
	"github.com/evalflow/evalflow/local/install"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/kube"
)

var root = testserver.RepoRoot()

func featureContext(t *testing.T) context.Context {
	ctx, err := broker.FeatureContext(context.Background(), os.DirFS(filepath.Join(root, "eventing")), "config-features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

// documents returns every YAML document of the files matching pattern.
func documents(t *testing.T, pattern string) map[string][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, pattern))
	if len(files) == 0 {
		t.Fatalf("no manifest matches %s", pattern)
	}
	docs := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range bytes.Split(b, []byte("\n---")) {
			if len(bytes.TrimSpace(d)) > 0 {
				docs[filepath.Base(f)+"#"+string(rune('1'+i))] = d
			}
		}
	}
	return docs
}

func TestEveryClusterManifestDecodesStrictlyAndValidates(t *testing.T) {
	ctx := featureContext(t)
	for _, pattern := range []string{"broker/*.yaml", "eventing/*.yaml", "triggers/*.yaml"} {
		for name, doc := range documents(t, pattern) {
			t.Run(name, func(t *testing.T) {
				var meta struct{ Kind, APIVersion string }
				yaml.Unmarshal(doc, &meta)
				switch meta.APIVersion + "/" + meta.Kind {
				case "eventing.knative.dev/v1/Trigger":
					if _, err := broker.ParseTrigger(ctx, doc); err != nil {
						t.Fatal(err)
					}
				case "eventing.knative.dev/v1/Broker":
					var b eventingv1.Broker
					strict(t, doc, &b)
					b.SetDefaults(ctx)
					if err := b.Validate(ctx); err != nil {
						t.Fatal(err)
					}
				case "sources.knative.dev/v1/SinkBinding":
					var s sourcesv1.SinkBinding
					strict(t, doc, &s)
					s.SetDefaults(ctx)
					if err := s.Validate(ctx); err != nil {
						t.Fatal(err)
					}
				case "sources.knative.dev/v1/ApiServerSource":
					var a sourcesv1.ApiServerSource
					strict(t, doc, &a)
					a.SetDefaults(ctx)
					if err := a.Validate(ctx); err != nil {
						t.Fatal(err)
					}
				case "sources.knative.dev/v1/PingSource":
					var p sourcesv1.PingSource
					strict(t, doc, &p)
					p.SetDefaults(ctx)
					if err := p.Validate(ctx); err != nil {
						t.Fatal(err)
					}
				case "v1/ConfigMap":
					strict(t, doc, &corev1.ConfigMap{})
				case "v1/Namespace":
					strict(t, doc, &corev1.Namespace{})
				case "v1/Service":
					strict(t, doc, &corev1.Service{})
				case "v1/PersistentVolumeClaim":
					strict(t, doc, &corev1.PersistentVolumeClaim{})
				case "v1/ServiceAccount":
					strict(t, doc, &corev1.ServiceAccount{})
				case "rbac.authorization.k8s.io/v1/Role":
					strict(t, doc, &rbacv1.Role{})
				case "rbac.authorization.k8s.io/v1/RoleBinding":
					strict(t, doc, &rbacv1.RoleBinding{})
				case "rbac.authorization.k8s.io/v1/ClusterRole":
					strict(t, doc, &rbacv1.ClusterRole{})
				case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
					strict(t, doc, &rbacv1.ClusterRoleBinding{})
				case "eventing.knative.dev/v1alpha1/EventPolicy":
					var p eventingv1alpha1.EventPolicy
					strict(t, doc, &p)
					p.SetDefaults(ctx)
					if err := p.Validate(ctx); err != nil {
						t.Fatal(err)
					}
				case "networking.k8s.io/v1/NetworkPolicy":
					strict(t, doc, &networkingv1.NetworkPolicy{})
				case "apps/v1/Deployment":
					var d appsv1.Deployment
					strict(t, doc, &d)
					if d.Spec.Selector == nil || d.Spec.Template.Labels[d.Spec.Selector.MatchLabels["app.kubernetes.io/name"]] == "" &&
						d.Spec.Template.Labels["app.kubernetes.io/name"] != d.Spec.Selector.MatchLabels["app.kubernetes.io/name"] {
						t.Fatal("the Deployment's selector does not match its pod labels")
					}
				default:
					t.Fatalf("no check for %s %s: add one", meta.APIVersion, meta.Kind)
				}
			})
		}
	}
}

// The Roles eventing/rbac.yaml grants in evalflow's own cluster are exactly what a
// run's credentials need there (kube.Needed, and kube.NeededForSandbox for a run that
// runs the model's code: what verify checks): no right missing, none more. Their
// subjects are the ServiceAccounts the functions' func.yaml name.
func TestTheJobsRoleGrantsWhatRunsNeedAndNoMore(t *testing.T) {
	roles, bindings := map[string]rbacv1.Role{}, map[string]rbacv1.RoleBinding{}
	accounts := map[string]bool{}
	for _, doc := range documents(t, "eventing/rbac.yaml") {
		var meta struct{ Kind string }
		yaml.Unmarshal(doc, &meta)
		switch meta.Kind {
		case "Role", "ClusterRole": // a ClusterRole's rules read as a Role's
			var role rbacv1.Role
			strict(t, doc, &role)
			roles[role.Name] = role
		case "RoleBinding", "ClusterRoleBinding":
			var binding rbacv1.RoleBinding
			strict(t, doc, &binding)
			bindings[binding.RoleRef.Name] = binding
		case "ServiceAccount":
			var sa corev1.ServiceAccount
			strict(t, doc, &sa)
			accounts[sa.Name] = true
		}
	}
	for name, perms := range map[string][]kube.Permission{"evalflow-jobs": kube.Needed, "evalflow-sandboxes": kube.NeededForSandbox,
		"evalflow-ticker": kube.NeededForTicking, "evalflow-delivery-review": kube.NeededForDeliveries} {
		granted := map[string]bool{}
		for _, r := range roles[name].Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						granted[kube.Permission{Verb: v, Group: g, Resource: res}.String()] = true
					}
				}
			}
		}
		needed := map[string]bool{}
		for _, p := range perms {
			needed[p.String()] = true
		}
		if !maps.Equal(granted, needed) {
			t.Errorf("Role %s grants %v; runs need %v", name, slices.Sorted(maps.Keys(granted)), slices.Sorted(maps.Keys(needed)))
		}
	}
	subjects := func(role string) map[string]bool {
		names := map[string]bool{}
		for _, s := range bindings[role].Subjects {
			names[s.Name] = true
		}
		return names
	}
	bound, sandboxes, ticking, reviewing := subjects("evalflow-jobs"), subjects("evalflow-sandboxes"), subjects("evalflow-ticker"),
		subjects("evalflow-delivery-review")
	for _, f := range []string{"start", "verify", "deploy", "job-watch", "artifact"} {
		b, err := os.ReadFile(filepath.Join(root, "functions", f, "func.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var fy struct {
			Deploy struct{ ServiceAccountName string } `json:"deploy"`
		}
		yaml.Unmarshal(b, &fy)
		sa := fy.Deploy.ServiceAccountName
		switch {
		case sa == "" || !accounts[sa] || bound[sa] == (f == "start" || f == "artifact"):
			t.Errorf("functions/%s runs as ServiceAccount %q: want one of eventing/rbac.yaml, bound to evalflow-jobs but for start's and artifact's", f, sa)
		case !reviewing[sa]:
			t.Errorf("functions/%s's ServiceAccount %s may not review the broker's tokens (evalflow-delivery-review)", f, sa)
		case sandboxes[sa] != (f == "verify" || f == "deploy"):
			t.Errorf("functions/%s's ServiceAccount %s bound to evalflow-sandboxes: %v", f, sa, sandboxes[sa])
		case ticking[sa] != (f == "start" || f == "job-watch"):
			t.Errorf("functions/%s's ServiceAccount %s bound to evalflow-ticker: %v", f, sa, ticking[sa])
		}
	}
}

// Only start is reachable from outside the cluster: every other function carries
// Knative's cluster-local visibility label (devkit/knative's test shows Traefik
// honouring it), and is reached by the broker's Triggers alone.
func TestOnlyStartIsPublic(t *testing.T) {
	for _, step := range evalflow.Steps {
		b, err := os.ReadFile(filepath.Join(root, "functions", string(step.ID), "func.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var fy struct {
			Deploy struct{ Labels []struct{ Key, Value string } } `json:"deploy"`
		}
		if err := yaml.Unmarshal(b, &fy); err != nil {
			t.Fatal(err)
		}
		local := false
		for _, l := range fy.Deploy.Labels {
			local = local || (l.Key == "networking.knative.dev/visibility" && l.Value == "cluster-local")
		}
		if local == (step.ID == evalflow.StepStart) {
			t.Errorf("functions/%s: cluster-local %v; only start may be public", step.ID, local)
		}
	}
}

func TestKindConfigDecodesStrictly(t *testing.T) {
	var c kindv1alpha4.Cluster
	b, _ := os.ReadFile(filepath.Join(root, "kind-config.yaml"))
	strict(t, b, &c)
	if c.Kind != "Cluster" || len(c.Nodes) == 0 || c.Nodes[0].Role != kindv1alpha4.ControlPlaneRole {
		t.Fatalf("kind config: %+v", c)
	}
	for _, n := range c.Nodes { // pinned: kind's default node image moves with kind
		if !strings.HasPrefix(n.Image, "kindest/node:v1.34.") || !strings.Contains(n.Image, "@sha256:") {
			t.Errorf("kind node %s runs %q; want kindest/node:v1.34.x by digest", n.Role, n.Image)
		}
	}
}

func strict(t *testing.T, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatal(err)
	}
}

// The trigger graph is the pipeline: each event type reaches exactly the functions
// the design says, and the step events nothing else.
func TestTriggersRouteEachEventToItsStep(t *testing.T) {
	resolve := func(ref *duckv1.KReference) (*url.URL, error) { return url.Parse("http://" + ref.Name + "/") }
	triggers, err := broker.LoadTriggers(featureContext(t), os.DirFS(filepath.Join(root, "triggers")), "evalflow", resolve)
	if err != nil {
		t.Fatal(err)
	}
	want := map[evalflow.EventType][]string{
		evalflow.TypeRequested:    {"evalflow-start"},
		evalflow.TypeStarted:      {"evalflow-verify"},
		evalflow.TypeVerified:     {"evalflow-deploy"},
		evalflow.TypeCancelled:    {"evalflow-deploy"},
		evalflow.TypeJobCreated:   {"evalflow-job-watch"},
		evalflow.TypeJobProgress:  {"evalflow-job-watch"},
		evalflow.TypeJobFinished:  {"evalflow-job-watch"},
		evalflow.TypeResultsReady: {"evalflow-artifact"},
		evalflow.TypePing:         {"evalflow-job-watch"},
		evalflow.TypeSucceeded:    nil,                 // the caller hears it as a notification
		evalflow.TypeFailed:       {"evalflow-deploy"}, // its job, if any, is stopped
		evalflow.TypeNotification: nil,                 // callers subscribe with their own triggers
		"com.example.unrelated":   nil,
	}
	for typ, subscribers := range want {
		ev := cloudevents.NewEvent()
		ev.SetID("1")
		ev.SetSource("/test")
		ev.SetType(string(typ))
		var got []string
		for _, tr := range triggers {
			if tr.Filter.Filter(context.Background(), ev) != eventfilter.FailFilter {
				got = append(got, tr.Subscriber.Host)
			}
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(subscribers, ",") {
			t.Errorf("%s reaches %v; want %v", typ, got, subscribers)
		}
	}
	for _, tr := range triggers {
		if tr.DeadLetter == nil || tr.Retry.RetryMax == 0 {
			t.Errorf("trigger %s has no retries or no dead letter sink", tr.Name)
			continue
		}
		// Dead letters fail their run in job-watch, which is cluster-local: no
		// caller outside the cluster can post one.
		if tr.DeadLetter.Host != "evalflow-job-watch" || tr.DeadLetter.Path != "/" {
			t.Errorf("trigger %s dead-letters to %s; want evalflow-job-watch", tr.Name, tr.DeadLetter)
		}
	}
}

// func.yaml of each function validates against the func CLI's own schema (v0.44.0).
func TestFuncYamlValidatesAgainstTheFuncSchema(t *testing.T) {
	out, err := exec.Command("go", "mod", "download", "-json", "knative.dev/func@v0.44.0").Output()
	if err != nil {
		t.Fatalf("go mod download knative.dev/func@v0.44.0: %v", err)
	}
	var mod struct{ Dir string }
	json.Unmarshal(out, &mod)
	c := jsonschema.NewCompiler()
	schema, err := c.Compile(filepath.Join(mod.Dir, "schema", "func_yaml-schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "functions", "*", "func.yaml"))
	if len(files) != 5 {
		t.Fatalf("%d func.yaml files; want 5", len(files))
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.Validate(v); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		var fn struct{ Name, Invoke string }
		yaml.Unmarshal(b, &fn)
		if fn.Name != "evalflow-"+filepath.Base(filepath.Dir(f)) {
			t.Errorf("%s names the function %q; the triggers expect evalflow-%s", f, fn.Name, filepath.Base(filepath.Dir(f)))
		}
	}
}

// evalflow's own Triggers filter one way: with filters (the new trigger filters), never
// the older filter.attributes.
func TestTriggersFilterOneWay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(root, "triggers", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no triggers (%v)", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := broker.ParseTrigger(featureContext(t), b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if (tr.Spec.Filter != nil && len(tr.Spec.Filter.Attributes) > 0) || len(tr.Spec.Filters) == 0 {
			t.Errorf("%s: filter %v, %d filters; want filters only", filepath.Base(f), tr.Spec.Filter, len(tr.Spec.Filters))
		}
	}
}

// Redis in a cluster asks for a password: protected mode on, the password in a config
// file of the Secret make deploy makes (never on the command line), and every function
// given it from that Secret.
func TestRedisAsksEveryClientForItsPassword(t *testing.T) {
	var redis *appsv1.Deployment
	for _, d := range documents(t, "eventing/redis.yaml") {
		var dep appsv1.Deployment
		if yaml.UnmarshalStrict(d, &dep) == nil && dep.Kind == "Deployment" {
			redis = &dep
		}
	}
	if redis == nil {
		t.Fatal("eventing/redis.yaml has no Deployment")
	}
	c := redis.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	if strings.Contains(args, "--protected-mode no") || strings.Contains(args, "requirepass") || !strings.HasPrefix(args, "/etc/evalflow-redis/redis.conf ") {
		t.Errorf("redis-server's arguments %q: want its config file first, protected mode on, no password", args)
	}
	var mounted bool
	for _, v := range redis.Spec.Template.Spec.Volumes {
		mounted = mounted || (v.Secret != nil && v.Secret.SecretName == install.RedisSecret)
	}
	if !mounted {
		t.Errorf("redis does not mount the Secret %s", install.RedisSecret)
	}
	files, _ := filepath.Glob(filepath.Join(root, "functions", "*", "func.yaml"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var fn struct {
			Run struct {
				Envs []struct{ Name, Value string }
			}
		}
		yaml.Unmarshal(b, &fn)
		var password string
		for _, e := range fn.Run.Envs {
			if e.Name == "REDIS_PASSWORD" {
				password = e.Value
			}
		}
		if password != "{{ secret:"+install.RedisSecret+":password }}" {
			t.Errorf("%s gives REDIS_PASSWORD %q; want it from the Secret %s", f, password, install.RedisSecret)
		}
	}
}

// The policies that admit evalflow's functions name each of them, and nothing else:
// a function added or renamed without them would be cut off from Redis.
func TestThePoliciesAdmitEveryFunctionByName(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(root, "functions", "*", "func.yaml"))
	var want []string
	for _, d := range dirs {
		b, _ := os.ReadFile(d)
		var fn struct{ Name string }
		yaml.Unmarshal(b, &fn)
		want = append(want, fn.Name)
	}
	sort.Strings(want)
	if len(want) != 5 {
		t.Fatalf("functions %v", want)
	}
	named := 0
	for name, doc := range documents(t, "eventing/networkpolicies.yaml") {
		var p networkingv1.NetworkPolicy
		strict(t, doc, &p)
		selectors := []*metav1.LabelSelector{&p.Spec.PodSelector}
		for _, in := range p.Spec.Ingress {
			for _, from := range in.From {
				selectors = append(selectors, from.PodSelector)
			}
		}
		for _, s := range selectors {
			if s == nil {
				continue
			}
			for _, e := range s.MatchExpressions {
				if e.Key == "serving.knative.dev/service" {
					named++
					got := slices.Sorted(slices.Values(e.Values))
					if e.Operator != metav1.LabelSelectorOpIn || !slices.Equal(got, want) {
						t.Errorf("%s (%s) selects %s %v; want In %v", name, p.Name, e.Operator, got, want)
					}
				}
			}
		}
	}
	if named != 3 {
		t.Errorf("%d selectors of functions; want 3 (the functions, Redis's and the registry's clients)", named)
	}
}

// The tick start makes on demand is eventing/pingsource.yaml's, which local mode's
// broker plays.
func TestTheTickMadeOnDemandIsTheManifests(t *testing.T) {
	var file map[string]any
	for _, doc := range documents(t, "eventing/pingsource.yaml") {
		if err := yaml.Unmarshal(doc, &file); err != nil {
			t.Fatal(err)
		}
	}
	made := kube.PingSource(evalflow.Tick, install.Namespace).Object
	a, _ := json.Marshal(file)
	b, _ := json.Marshal(made)
	if !bytes.Equal(a, b) {
		t.Errorf("eventing/pingsource.yaml\n%s\nstart makes\n%s", a, b)
	}
}

// Only the broker delivers to the steps, and only evalflow posts to the broker (Knative
// Eventing's OIDC, on in config-features.yaml): each Trigger names the audience of the
// step it delivers to (and of its dead-letter sink), which that step's func.yaml takes
// deliveries for; each step posts with the SinkBinding's token; the EventPolicy lets
// evalflow's namespace and the Jobs' post to the broker, and a Job reports with a token
// for the broker's audience.
func TestOnlyTheBrokerDeliversAndOnlyEvalflowPosts(t *testing.T) {
	env := map[string]map[string]string{} // by function name
	for _, f := range []string{"start", "verify", "deploy", "job-watch", "artifact"} {
		b, err := os.ReadFile(filepath.Join(root, "functions", f, "func.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var fy struct {
			Name string
			Run  struct {
				Envs []struct{ Name, Value string }
			}
		}
		if err := yaml.Unmarshal(b, &fy); err != nil {
			t.Fatal(err)
		}
		env[fy.Name] = map[string]string{}
		for _, e := range fy.Run.Envs {
			env[fy.Name][e.Name] = e.Value
		}
		if got := env[fy.Name]["EVALFLOW_BROKER_TOKEN_FILE"]; got != "/oidc/token" {
			t.Errorf("%s posts to the broker with the token at %q; want the SinkBinding's, /oidc/token", fy.Name, got)
		}
	}
	audienceOf := func(d *duckv1.Destination) string {
		return "serving.knative.dev/service/" + install.Namespace + "/" + d.Ref.Name
	}
	ctx := featureContext(t)
	for name, doc := range documents(t, "triggers/*.yaml") {
		tr, err := broker.ParseTrigger(ctx, doc)
		if err != nil {
			t.Fatal(err)
		}
		dests := []*duckv1.Destination{&tr.Spec.Subscriber}
		if tr.Spec.Delivery != nil && tr.Spec.Delivery.DeadLetterSink != nil {
			dests = append(dests, tr.Spec.Delivery.DeadLetterSink)
		}
		for _, d := range dests {
			want := audienceOf(d)
			if d.Audience == nil || *d.Audience != want || env[d.Ref.Name]["EVALFLOW_DELIVERY_AUDIENCE"] != want {
				t.Errorf("%s delivers to %s for audience %v, which takes deliveries for %q; want both %s", name, d.Ref.Name, d.Audience,
					env[d.Ref.Name]["EVALFLOW_DELIVERY_AUDIENCE"], want)
			}
		}
	}
	var features corev1.ConfigMap
	for _, doc := range documents(t, "eventing/config-features.yaml") {
		strict(t, doc, &features)
	}
	if features.Data["authentication-oidc"] != "enabled" {
		t.Errorf("authentication-oidc is %q; want enabled", features.Data["authentication-oidc"])
	}
	var brokerName string
	for _, doc := range documents(t, "broker/*.yaml") {
		var b eventingv1.Broker
		strict(t, doc, &b)
		brokerName = b.Name
	}
	if got, want := env["evalflow-deploy"]["EVALFLOW_JOB_CALLBACK_AUDIENCE"], "eventing.knative.dev/broker/"+install.Namespace+"/"+brokerName; got != want {
		t.Errorf("Jobs report for audience %q; want the broker's, %s", got, want)
	}
	for _, doc := range documents(t, "eventing/eventpolicy.yaml") {
		var p eventingv1alpha1.EventPolicy
		strict(t, doc, &p)
		if len(p.Spec.To) != 1 || p.Spec.To[0].Ref == nil || p.Spec.To[0].Ref.Kind != "Broker" || p.Spec.To[0].Ref.Name != brokerName {
			t.Errorf("EventPolicy %s applies to %+v; want the broker %s alone", p.Name, p.Spec.To, brokerName)
		}
		var from []string
		for _, f := range p.Spec.From {
			if f.Sub != nil {
				from = append(from, *f.Sub)
			}
		}
		want := []string{"system:serviceaccount:" + install.Namespace + ":*", "system:serviceaccount:" + env["evalflow-deploy"]["EVALFLOW_JOB_NAMESPACE"] + ":*"}
		if !slices.Equal(from, want) || len(p.Spec.From) != len(want) {
			t.Errorf("EventPolicy %s lets %v post; want %v", p.Name, from, want)
		}
	}
}
