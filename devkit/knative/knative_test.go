package knative_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/node"
	"github.com/evalflow/evalflow/devkit/testserver"
)

// Knative Eventing built from source runs on the node: a CloudEvent posted to a
// Broker's ingress, at the address its status gives (resolved by the cluster DNS),
// reaches the subscriber of a Trigger whose filter it passes, and only that one.
func TestEventingDeliversFromABrokerThroughATrigger(t *testing.T) {
	n := testserver.Node(t)
	testserver.KnativeEventing(t, n)
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn := testserver.KubeDynamic(t, kc)
	ctx := context.Background()
	sink := testserver.NewSinkOn(t, n.Address)
	_, port, _ := net.SplitHostPort(sink.Listener.Addr().String())
	if err := knative.Apply(ctx, kc, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: events}
---
apiVersion: v1
kind: Service
metadata: {name: sink, namespace: events}
spec:
  ports: [{name: http, port: 80, targetPort: %[1]s}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: sink, namespace: events}
subsets: [{addresses: [{ip: %[2]s}], ports: [{name: http, port: %[1]s}]}]
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: events}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: wanted, namespace: events}
spec:
  broker: default
  filter: {attributes: {type: dev.evalflow.wanted}}
  subscriber:
    ref: {apiVersion: v1, kind: Service, name: sink}
    uri: /wanted
`, port, n.Address)); err != nil {
		t.Fatal(err)
	}
	broker := ready(t, dyn, schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"}, "events", "default")
	ready(t, dyn, schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"}, "events", "wanted")
	ingress, _, _ := unstructured.NestedString(broker.Object, "status", "address", "url")
	if ingress == "" {
		t.Fatalf("the Broker has no address: %v", broker.Object["status"])
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: clusterDialer(n)}}
	post := func(i int, typ string) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, ingress, bytes.NewReader([]byte(`{"n": `+strconv.Itoa(i)+`}`)))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Type", typ)
		req.Header.Set("Ce-Source", "evalflow-test")
		req.Header.Set("Ce-Id", "event-"+strconv.Itoa(i))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// The Broker is Ready before its data path is, on a busy node (two nodes and their
	// Knative share two cores in make test): each event is posted until the ingress
	// takes it. Delivery is at least once, as Knative's: a post that timed out may have
	// gone through, so the subscriber may get the wanted event more than once, and
	// never the unwanted one.
	client.Timeout = time.Minute
	for i, typ := range []string{"dev.evalflow.unwanted", "dev.evalflow.wanted"} {
		var last string
		for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
			code, err := post(i, typ)
			if now := fmt.Sprint(code, err); now != last { // what the ingress answered, when it changes
				t.Logf("the broker's ingress answers %s: %d %v", typ, code, err)
				last = now
			}
			if err == nil && code == http.StatusAccepted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the broker's ingress did not take %s within 4m; the subscriber got %d events\n%s", typ, len(sink.Got("/wanted")), diagnose(n, kc, client))
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(sink.Got("/wanted")) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	got := sink.Got("/wanted")
	if len(got) == 0 {
		t.Fatal("the subscriber got nothing; want the wanted event")
	}
	for _, e := range got {
		if e.Type() != "dev.evalflow.wanted" || e.ID() != "event-1" {
			t.Fatalf("the subscriber got %v; want the wanted event alone", got)
		}
	}
}

// diagnose is what a failing delivery leaves to read: whether the node itself reaches
// the subscriber through its Service, the node's filter rules, and what Eventing's
// pods said.
func diagnose(n *node.Node, kubeconfig []byte, client *http.Client) string {
	var b strings.Builder
	req, _ := http.NewRequest(http.MethodPost, "http://sink.events.svc.cluster.local/probe", strings.NewReader("{}"))
	for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "probe", "Ce-Source": "evalflow-test", "Ce-Id": "probe"} {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err == nil {
		resp.Body.Close()
		fmt.Fprintf(&b, "the node posting to the subscriber's Service: %s\n", resp.Status)
	} else {
		fmt.Fprintf(&b, "the node posting to the subscriber's Service: %v\n", err)
	}
	for _, args := range [][]string{{"-S", "INPUT"}, {"-S", "FORWARD"}, {"-S", "EVALFLOW-NETPOL"}, {"-t", "nat", "-S", "KUBE-SERVICES"}} {
		out, _ := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
		fmt.Fprintf(&b, "--- iptables %s\n%s", strings.Join(args, " "), out)
	}
	b.WriteString(testserver.PodLogs(kubeconfig, "knative-eventing", 40))
	return b.String()
}

// ready waits until the object's Ready condition is True, and returns it.
func ready(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		obj, err := dyn.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
			for _, cd := range conds {
				if m, _ := cd.(map[string]any); m["type"] == "Ready" && m["status"] == "True" {
					return obj
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s/%s not Ready: %v %v", gvr.Resource, ns, name, err, obj)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// clusterDialer dials names as a pod would: resolved by the node's cluster DNS.
func clusterDialer(n *node.Node) func(ctx context.Context, network, addr string) (net.Conn, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(n.DNS, "53"))
	}}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := r.LookupHost(ctx, host)
		if err != nil || len(ips) == 0 {
			return nil, fmt.Errorf("cluster DNS: %s: %v", host, err)
		}
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(ips[0], port))
	}
}
