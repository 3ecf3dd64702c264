// Package knative brings Knative, built from source by hack/install-knative.sh, up
// on a node of devkit/node: it pushes the cached images to the node's registry,
// applies the manifests and waits until every Deployment is Available.
package knative

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/node"
)

// EventingVersion is the Knative (Eventing and Serving) hack/install-knative.sh builds.
const EventingVersion = "0.50.0"

// KoVersion is the ko that builds them.
const KoVersion = "0.18.1"

// EventingDir and ServingDir are where hack/install-knative.sh caches Eventing and
// Serving.
func EventingDir() string { return built("eventing") }
func ServingDir() string  { return built("serving") }

func built(component string) string {
	return filepath.Join(localserver.CacheDir(), "knative-"+component+"-v"+EventingVersion+"-ko-v"+KoVersion)
}

// Namespace is where Knative Eventing runs.
const Namespace = "knative-eventing"

// UpEventing brings Knative Eventing up on n from the build cached in dir: core, the
// in-memory channel and the MT channel broker. Applying it again changes nothing.
func UpEventing(ctx context.Context, n *node.Node, dir string) error {
	manifests, err := os.ReadFile(filepath.Join(dir, "eventing.yaml"))
	if err != nil {
		return fmt.Errorf("knative: eventing not built (hack/install-knative.sh builds it): %w", err)
	}
	if err := pushImages(ctx, string(manifests), filepath.Join(dir, "registry"), n.Registry); err != nil {
		return err
	}
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		return err
	}
	c, err := Connect(kc)
	if err != nil {
		return err
	}
	if err := c.Create(ctx, strings.ReplaceAll(string(manifests), placeholder, n.Registry+"/")); err != nil {
		return err
	}
	return c.Available(ctx, Namespace, 5*time.Minute)
}

// ServingNamespace is where Knative Serving runs.
const ServingNamespace = "knative-serving"

// Ingress is how requests reach Knative Services on the node: Traefik's entrypoints.
type Ingress struct {
	// Public and Private are HOST:PORT of the public entrypoint (every Service) and the
	// cluster-local one, on the node address; a request names its Service by Host.
	Public, Private string
	// Loopback is the public entrypoint on 127.0.0.1: with Domain "localhost", a
	// Service's URL with this port works from the host as it is (curl and browsers
	// resolve *.localhost to loopback).
	Loopback string
	// Domain is the Services' domain: NAME.NAMESPACE.Domain.
	Domain string
}

// Save writes the ingress to the node's directory, for LoadIngress.
func (in *Ingress) Save(dir string) error {
	b, _ := json.Marshal(in)
	return os.WriteFile(filepath.Join(dir, "ingress.json"), b, 0o644)
}

// LoadIngress reads the ingress UpServing made on the node of dir.
func LoadIngress(dir string) (*Ingress, error) {
	b, err := os.ReadFile(filepath.Join(dir, "ingress.json"))
	if err != nil {
		return nil, err
	}
	in := &Ingress{}
	return in, json.Unmarshal(b, in)
}

// Domain is the domain of Knative Services on the node: NAME.NAMESPACE.localhost
// resolves to loopback on the host (RFC 6761), where Traefik answers too.
const Domain = "localhost"

// UpServing brings Knative Serving up on n from the build cached in dir, with Traefik
// (the binary traefik, hack/install-traefik.sh) as its networking layer: a host
// process of the node on its address, reading Knative's ingresses from the API server.
func UpServing(ctx context.Context, n *node.Node, dir, traefik string) (*Ingress, error) {
	manifests, err := os.ReadFile(filepath.Join(dir, "serving.yaml"))
	if err != nil {
		return nil, fmt.Errorf("knative: serving not built (hack/install-knative.sh serving builds it): %w", err)
	}
	if err := pushImages(ctx, string(manifests), filepath.Join(dir, "registry"), n.Registry); err != nil {
		return nil, err
	}
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := Connect(kc)
	if err != nil {
		return nil, err
	}
	if err := c.Create(ctx, strings.ReplaceAll(string(manifests), placeholder, n.Registry+"/")); err != nil {
		return nil, err
	}
	if err := c.Available(ctx, ServingNamespace, 5*time.Minute); err != nil {
		return nil, err
	}
	host := strings.Split(n.Registry, ":")[0]
	for name, data := range map[string]map[string]string{
		"config-network": {"ingress-class": "traefik.ingress.networking.knative.dev"},
		"config-domain":  {Domain: ""},
		// The controller resolves tags to digests from its pod, which reaches the
		// node's registry by address; its images are named by digest already.
		"config-deployment": {"registries-skipping-tag-resolving": "kind.local,ko.local,dev.local," + n.Registry},
	} {
		if err := c.setConfig(ctx, ServingNamespace, name, data); err != nil {
			return nil, err
		}
	}
	in, err := c.startTraefik(ctx, n, host, traefik)
	if err != nil {
		return nil, err
	}
	return in, in.Save(n.Dir)
}

// setConfig adds data to the ConfigMap (Knative's webhook validates it).
func (c *Cluster) setConfig(ctx context.Context, namespace, name string, data map[string]string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		cm, err := c.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			for k, v := range data {
				cm.Data[k] = v
			}
			if _, err = c.Kube.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{}); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("knative: configure %s/%s: %w", namespace, name, err)
		}
		time.Sleep(time.Second)
	}
}

// startTraefik runs Traefik's Knative provider on the node address, with a public
// and a cluster-local entrypoint, each also a Service (with an endpoint on the node
// address) that Knative names in its ingresses' status.
func (c *Cluster) startTraefik(ctx context.Context, n *node.Node, host, traefik string) (*Ingress, error) {
	free, err := localserver.FreePortsOn(host, 3)
	if err != nil {
		return nil, err
	}
	loop, err := localserver.FreePortsOn("127.0.0.1", 1)
	if err != nil {
		return nil, err
	}
	ports := []string{strconv.Itoa(free[0]), strconv.Itoa(free[1]), strconv.Itoa(free[2])}
	in := &Ingress{Public: net.JoinHostPort(host, ports[0]), Private: net.JoinHostPort(host, ports[1]), Domain: Domain,
		Loopback: net.JoinHostPort("127.0.0.1", strconv.Itoa(loop[0]))}
	for name, port := range map[string]string{"traefik-public": ports[0], "traefik-private": ports[1]} {
		// Applied, not only created: Traefik's ports are new at each start, also on a
		// node started again whose Services have the ports of before.
		objs, err := Objects(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  ports: [{name: http, port: 80, targetPort: %[3]s}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: %[1]s, namespace: %[2]s}
subsets: [{addresses: [{ip: %[4]s}], ports: [{name: http, port: %[3]s}]}]
`, name, ServingNamespace, port, host))
		if err != nil {
			return nil, err
		}
		if err := c.Apply(ctx, objs...); err != nil {
			return nil, err
		}
	}
	// The static configuration holds the API server's token: a file only root reads,
	// not the command line.
	conf := fmt.Sprintf(`log: {level: INFO}
ping: {entryPoint: ping}
experimental: {knative: true}
entryPoints:
  ping: {address: %q}
  web: {address: %q}
  web-loopback: {address: %q}
  web-internal: {address: %q}
providers:
  knative:
    endpoint: %q
    token: %q
    certAuthFilePath: %q
    publicEntrypoints: [web, web-loopback]
    privateEntrypoints: [web-internal]
    publicService: {name: traefik-public, namespace: %s}
    privateService: {name: traefik-private, namespace: %s}
`, net.JoinHostPort(host, ports[2]), in.Public, in.Loopback, in.Private, n.API, n.AdminToken, filepath.Join(n.Dir, "certs", "apiserver.crt"),
		ServingNamespace, ServingNamespace)
	path := filepath.Join(n.Dir, "traefik.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	err = n.Spawn(ctx, "traefik", localserver.HTTPOK("http://"+net.JoinHostPort(host, ports[2])+"/ping"), 60*time.Second, traefik,
		"--configFile="+path)
	if err != nil {
		return nil, err
	}
	return in, nil
}

// placeholder is the cached manifests' registry.
const placeholder = "REGISTRY/"

var imageRef = regexp.MustCompile(`REGISTRY/[^\s"']+@sha256:[0-9a-f]{64}`)

// pushImages copies every image the manifests name from the cached registry storage
// to the node's registry, under the same repository and digest.
func pushImages(ctx context.Context, manifests, storage, registry string) error {
	serve, err := os.MkdirTemp("", "evalflow-knative-registry")
	if err != nil {
		return err
	}
	defer os.RemoveAll(serve)
	if err := os.Symlink(storage, filepath.Join(serve, "data")); err != nil {
		return err
	}
	cached, err := localserver.Registry(ctx, serve, "", "")
	if err != nil {
		return err
	}
	defer cached.Stop()
	seen := map[string]bool{}
	for _, ref := range imageRef.FindAllString(manifests, -1) {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		path := strings.TrimPrefix(ref, placeholder)
		if err := crane.Copy(cached.Addr+"/"+path, registry+"/"+path, crane.Insecure, crane.WithContext(ctx)); err != nil {
			return fmt.Errorf("knative: push %s to the node: %w", path, err)
		}
	}
	if len(seen) == 0 {
		return errors.New("knative: the manifests name no image")
	}
	return nil
}
