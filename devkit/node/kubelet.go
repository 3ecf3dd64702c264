package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The node's own parts: containerd, the kubelet and kube-proxy, and waiting for them.

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
podPidsLimit: 1024
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

// startProxy runs kube-proxy in iptables mode, so that pods reach Services. Before it,
// a connection to a Service address kube-proxy has no rule for (yet) is refused at once
// (guardServices): it would otherwise leave the machine by the default route.
func (n *Node) startProxy(ctx context.Context, cfg Config) error {
	if err := guardServices(cfg.ServiceCIDR); err != nil {
		return err
	}
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

// servicesChain refuses what goes to the Services' range without kube-proxy's DNAT.
const servicesChain = "EVALFLOW-SERVICES"

// guardServices makes every packet to an address of cidr that kube-proxy did not
// translate (a Service not programmed yet, an address no Service has) be refused,
// from the node (OUTPUT) and from its pods (FORWARD): no such packet takes the default
// route off the machine, and its sender learns at once instead of waiting out a
// connect timeout. Down removes the chain with the node's others.
func guardServices(cidr string) error {
	rules := fmt.Sprintf("*filter\n:%[1]s - [0:0]\n-A %[1]s -d %[2]s -m conntrack ! --ctstate DNAT -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n",
		servicesChain, cidr)
	cmd := exec.Command("iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("node: the Services' guard: %w: %s", err, out)
	}
	for _, hook := range []string{"OUTPUT", "FORWARD"} {
		if exec.Command("iptables", "-w", "-C", hook, "-j", servicesChain).Run() == nil {
			continue
		}
		if out, err := exec.Command("iptables", "-w", "-I", hook, "1", "-j", servicesChain).CombinedOutput(); err != nil {
			return fmt.Errorf("node: the Services' guard in %s: %w: %s", hook, err, out)
		}
	}
	return nil
}

// startNetworkPolicy enforces NetworkPolicies on the node, when the config names the
// enforcer (hack/netpol: kube-network-policies' engine behind iptables' NFQUEUE), which
// fails closed: a policed pod's new connection is dropped while it is down. It learns a
// pod's address from the API server (containerd 1.6 has no NRI to tell it sooner).
func (n *Node) startNetworkPolicy(ctx context.Context, cfg Config) error {
	if cfg.NetworkPolicy == "" {
		return nil
	}
	return n.Spawn(ctx, "network-policy", func(ctx context.Context) error {
		return exec.CommandContext(ctx, "iptables", "-w", "-C", "FORWARD", "-j", "EVALFLOW-NETPOL").Run()
	}, 30*time.Second, cfg.NetworkPolicy, "-kubeconfig", n.Kubeconfig, "-node", Name)
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
