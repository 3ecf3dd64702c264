package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/evalflow/evalflow/devkit/images"
	"github.com/evalflow/evalflow/devkit/localserver"
)

// PauseImage is the sandbox image's name under the node's registry.
const PauseImage = "evalflow/pause:3.10"

// startRegistry serves the node's images (and anything pods push) on the node
// address, in plain HTTP (registryAddr).
func (n *Node) startRegistry(ctx context.Context, cfg Config) (err error) {
	dir := filepath.Join(n.Dir, "registry")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if n.Registry, err = registryAddr(dir, cfg.Address); err != nil {
		return err
	}
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), n.Registry)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(conf), 0o644); err != nil {
		return err
	}
	return n.Spawn(ctx, "registry", localserver.HTTPReady("http://"+n.Registry+"/v2/"), 15*time.Second,
		"docker-registry", "serve", filepath.Join(dir, "config.yml"))
}

// registryAddr is where the registry kept in dir listens on host: where it listened
// before, when the node starts again on its state and that port is free (the
// Deployments kept in etcd, Knative's and evalflow's, name their images there), else a
// free port, recorded for the next start.
func registryAddr(dir, host string) (string, error) {
	file := filepath.Join(dir, "addr")
	if b, err := os.ReadFile(file); err == nil {
		addr := strings.TrimSpace(string(b))
		if h, _, err := net.SplitHostPort(addr); err == nil && h == host {
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				return addr, nil
			}
		}
	}
	ports, err := localserver.FreePortsOn(host, 1)
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(ports[0]))
	return addr, os.WriteFile(file, []byte(addr+"\n"), 0o644)
}

// pushPause builds the sandbox image from cfg.Pause and pushes it.
func (n *Node) pushPause(_ context.Context, cfg Config) error {
	img, err := images.Build(images.Spec{Binary: cfg.Pause, Path: "/pause", OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		return err
	}
	_, err = images.Push(img, n.Registry+"/"+PauseImage)
	return err
}

// startControlPlane starts etcd, the API server (on the node address, so that pods
// reach it), the controller manager and the scheduler.
func (n *Node) startControlPlane(ctx context.Context, cfg Config) error {
	ports, err := localserver.FreePorts(2)
	if err != nil {
		return err
	}
	client, peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := n.Spawn(ctx, "etcd", localserver.HTTPOK(client+"/health"), 20*time.Second, filepath.Join(cfg.Bin, "etcd"),
		"--data-dir", filepath.Join(n.Dir, "etcd"), "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer,
		"--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return err
	}
	pki, err := writePKI(filepath.Join(n.Dir, "pki"), cfg.Address)
	if err != nil {
		return err
	}
	tokens := filepath.Join(n.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf("%s,evalflow-admin,uid-admin,\"system:masters\"\n", n.AdminToken)), 0o600); err != nil {
		return err
	}
	certs := filepath.Join(n.Dir, "certs")
	if err := n.Spawn(ctx, "kube-apiserver", localserver.TLSOK(n.API+"/readyz"), 90*time.Second, filepath.Join(cfg.Bin, "kube-apiserver"),
		"--etcd-servers", client, "--bind-address", cfg.Address, "--advertise-address", cfg.Address,
		"--secure-port", strconv.Itoa(apiPort), "--cert-dir", certs, "--service-cluster-ip-range", cfg.ServiceCIDR,
		"--service-account-key-file", pki.saPub, "--service-account-signing-key-file", pki.saKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--token-auth-file", tokens, "--authorization-mode", "RBAC",
		"--kubelet-client-certificate", pki.clientCert, "--kubelet-client-key", pki.clientKey,
		"--kubelet-certificate-authority", pki.ca, "--kubelet-preferred-address-types", "InternalIP"); err != nil {
		return err
	}
	var err2 error
	if n.CA, err2 = os.ReadFile(filepath.Join(certs, "apiserver.crt")); err2 != nil {
		return fmt.Errorf("node: the API server's certificate: %w", err2)
	}
	if err := os.WriteFile(n.Kubeconfig, n.kubeconfig(), 0o600); err != nil {
		return err
	}
	started := func(context.Context) error { return nil }
	if err := n.Spawn(ctx, "kube-controller-manager", started, time.Second, filepath.Join(cfg.Bin, "kube-controller-manager"),
		"--kubeconfig", n.Kubeconfig, "--bind-address", "127.0.0.1", "--secure-port", "0", "--leader-elect=false",
		"--controllers", "*", "--root-ca-file", filepath.Join(certs, "apiserver.crt"),
		"--service-account-private-key-file", pki.saKey, "--use-service-account-credentials=true",
		"--cluster-cidr", cfg.PodCIDR, "--service-cluster-ip-range", cfg.ServiceCIDR); err != nil {
		return err
	}
	n.pki = pki
	return n.Spawn(ctx, "kube-scheduler", started, time.Second, filepath.Join(cfg.Bin, "kube-scheduler"),
		"--kubeconfig", n.Kubeconfig, "--leader-elect=false", "--secure-port", "0")
}

// startDNS serves cluster DNS with CoreDNS on the node address, as the kube-dns
// Service (the tenth address of the Service range), when the config names CoreDNS.
// It answers cluster.local names only: nothing leaves the machine.
func (n *Node) startDNS(ctx context.Context, cfg Config) error {
	if cfg.CoreDNS == "" {
		return nil
	}
	_, services, err := net.ParseCIDR(cfg.ServiceCIDR)
	if err != nil {
		return fmt.Errorf("node: service range: %w", err)
	}
	ip := services.IP.To4()
	n.DNS = net.IPv4(ip[0], ip[1], ip[2], ip[3]+10).String()
	corefile := fmt.Sprintf(`.:53 {
    bind %[1]s
    errors
    ready %[1]s:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %[2]s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
`, cfg.Address, n.Kubeconfig)
	path := filepath.Join(n.Dir, "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		return err
	}
	if err := n.Spawn(ctx, "coredns", localserver.HTTPOK("http://"+cfg.Address+":8181/ready"), 30*time.Second, cfg.CoreDNS, "-conf", path); err != nil {
		return err
	}
	ports := `[{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]`
	// A node started again on its directory has them from before (its etcd keeps
	// them), and the Service's address is taken by that Service itself.
	var existing struct {
		Spec struct {
			ClusterIP string `json:"clusterIP"`
		} `json:"spec"`
	}
	if err := n.call(ctx, http.MethodGet, "/api/v1/namespaces/kube-system/services/kube-dns", "", &existing); err != nil || existing.Spec.ClusterIP != n.DNS {
		if err := n.post(ctx, "/api/v1/namespaces/kube-system/services", fmt.Sprintf(`{"apiVersion": "v1", "kind": "Service",
		"metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
		"spec": {"clusterIP": %q, "ports": %s}}`, n.DNS, ports)); err != nil {
			return err
		}
	}
	if err := n.post(ctx, "/api/v1/namespaces/kube-system/endpoints", fmt.Sprintf(`{"apiVersion": "v1", "kind": "Endpoints",
		"metadata": {"name": "kube-dns", "namespace": "kube-system"},
		"subsets": [{"addresses": [{"ip": %q}], "ports": %s}]}`, cfg.Address, ports)); err != nil && !isConflict(err) {
		return err
	}
	return nil
}

// Volumes is how many persistent volumes the node offers, each Capacity large.
const (
	Volumes  = 4
	Capacity = "10Gi"
)

// startStorage gives the node persistent volumes as a small cluster's operator
// provisions them by hand: a default StorageClass "local" without a provisioner, and
// Volumes hostPath volumes under the node's directory that claims bind to when their
// pod is scheduled. Writable by any pod user (each volume has one claim).
func (n *Node) startStorage(ctx context.Context, _ Config) error {
	if err := n.post(ctx, "/apis/storage.k8s.io/v1/storageclasses", `{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
		"metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
		"provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Retain"}`); err != nil && !isConflict(err) {
		return err
	}
	for i := range Volumes {
		dir := filepath.Join(n.Dir, "volumes", fmt.Sprintf("pv%d", i))
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o1777); err != nil {
			return err
		}
		if err := n.post(ctx, "/api/v1/persistentvolumes", fmt.Sprintf(`{"apiVersion": "v1", "kind": "PersistentVolume",
			"metadata": {"name": "local-pv%d"},
			"spec": {"capacity": {"storage": %q}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local",
			  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": %q, "type": "Directory"}}}`, i, Capacity, dir)); err != nil && !isConflict(err) {
			return err
		}
	}
	return nil
}

// isConflict is an API answer that the object exists already.
func isConflict(err error) bool { return strings.Contains(err.Error(), "409 Conflict") }
