package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

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

// startContainerd runs containerd with its own root, state and socket, pulling from
// the node's registry in plain HTTP and networking pods with the CNI bridge.
func (n *Node) startContainerd(ctx context.Context, cfg Config) error {
	dir := filepath.Join(n.Dir, "containerd")
	cni := filepath.Join(n.Dir, "cni")
	for _, d := range []string{dir, cni} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.%q]
    endpoint = [%q]
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), n.Machine.ContainerdSock, filepath.Join(dir, "opt"),
		n.Registry+"/"+PauseImage, cni, n.Registry, "http://"+n.Registry)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o644); err != nil {
		return err
	}
	conflist := map[string]any{"cniVersion": "1.0.0", "name": Name, "plugins": []any{
		map[string]any{"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
			"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": cfg.PodCIDR}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}}, "dataDir": filepath.Join(n.Dir, "cni-ipam")}},
		map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
	}}
	b, _ := json.MarshalIndent(conflist, "", "  ")
	if err := os.WriteFile(filepath.Join(cni, "10-evalflow.conflist"), b, 0o644); err != nil {
		return err
	}
	sock := n.Machine.ContainerdSock
	return n.Spawn(ctx, "containerd", func(ctx context.Context) error { return criReady(ctx, sock) },
		60*time.Second, "containerd", "--config", filepath.Join(dir, "config.toml"))
}

// criReady is whether containerd's CRI answers on sock, as the kubelet asks it when it
// starts (and exits if it does not): containerd answers its own API before its CRI has
// loaded what it had, on a node started again on its state.
func criReady(ctx context.Context, sock string) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	return err
}

// startKubelet runs the kubelet against containerd and waits for the node to be Ready.
func (n *Node) startKubelet(ctx context.Context, cfg Config) error {
	for _, h := range cgroupHierarchies() {
		if err := os.MkdirAll(filepath.Join(h, Name), 0o755); err != nil {
			return fmt.Errorf("node: cgroup %s: %w", h, err)
		}
	}
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /%s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzPort: 0
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
podLogsDir: %s
serializeImagePulls: false
maxPods: 50
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
%s`, Name, n.Machine.ContainerdSock, cfg.Address, n.pki.kubeletCert, n.pki.kubeletKey, n.pki.ca, filepath.Join(n.Dir, "pod-logs"), clusterDNS(n.DNS))
	path := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	n.kubeletStarted = time.Now()
	return n.Spawn(ctx, "kubelet", n.nodeReady, 60*time.Second, filepath.Join(cfg.Bin, "kubelet"),
		"--config", path, "--kubeconfig", n.Kubeconfig, "--root-dir", filepath.Join(n.Dir, "kubelet"),
		"--hostname-override", Name, "--node-ip", cfg.Address)
}

// clusterDNS is the kubelet's setting for pods' DNS: the kube-dns Service, if any.
func clusterDNS(ip string) string {
	if ip == "" {
		return ""
	}
	return fmt.Sprintf("clusterDNS: [%s]\nclusterDomain: cluster.local\n", ip)
}

// startProxy runs kube-proxy in iptables mode, so that pods reach Services.
func (n *Node) startProxy(ctx context.Context, cfg Config) error {
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: %s}
clusterCIDR: %s
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: %s:10256
metricsBindAddress: %s:10249
nodePortAddresses: [%s/32]
conntrack: {maxPerCore: 0}
`, n.Kubeconfig, cfg.PodCIDR, Name, cfg.Address, cfg.Address, cfg.Address, cfg.Address)
	path := filepath.Join(n.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	return n.Spawn(ctx, "kube-proxy", func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, "iptables", "-t", "nat", "-S", "KUBE-SERVICES").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "default/kubernetes") {
			return errors.New("the kubernetes Service has no rule yet")
		}
		return nil
	}, 30*time.Second, filepath.Join(cfg.Bin, "kube-proxy"), "--config", path)
}

// waitAccounts waits until the default namespace has its default ServiceAccount,
// without which no pod is admitted.
func (n *Node) waitAccounts(ctx context.Context, _ Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var sa struct{}
		err := n.get(ctx, "/api/v1/namespaces/default/serviceaccounts/default", &sa)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: no default ServiceAccount: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodeReady is nil when the node's Ready condition is True.
func (n *Node) nodeReady(ctx context.Context) error {
	var node struct {
		Status struct {
			Conditions []struct {
				Type, Status, Message string
				LastHeartbeatTime     time.Time
			}
		}
	}
	if err := n.get(ctx, "/api/v1/nodes/"+Name, &node); err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == "Ready" {
			// A node started again on its state has its Ready of before, until this
			// kubelet reports (the API's times are in whole seconds).
			if c.Status == "True" && !c.LastHeartbeatTime.Before(n.kubeletStarted.Truncate(time.Second)) {
				return nil
			}
			return fmt.Errorf("node not ready: %s", c.Message)
		}
	}
	return errors.New("node has no Ready condition yet")
}

// get reads an API path as the admin into v.
func (n *Node) get(ctx context.Context, path string, v any) error {
	return n.call(ctx, http.MethodGet, path, "", v)
}

// post creates the object body (JSON) at an API path as the admin.
func (n *Node) post(ctx context.Context, path, body string) error {
	return n.call(ctx, http.MethodPost, path, body, nil)
}

func (n *Node) call(ctx context.Context, method, path, body string, v any) error {
	c, err := n.client()
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, method, n.API+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+n.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("node: %s %s: %s: %s", method, path, resp.Status, b)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// cgroupHierarchies are the cgroup v1 hierarchies the kubelet puts pods in.
func cgroupHierarchies() []string {
	var hs []string
	for _, c := range []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd", "hugetlb", "net_cls", "net_prio", "perf_event", "unified"} {
		if exists(filepath.Join("/sys/fs/cgroup", c)) {
			hs = append(hs, filepath.Join("/sys/fs/cgroup", c))
		}
	}
	return hs
}
