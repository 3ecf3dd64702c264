// Package node runs a single-node Kubernetes on this machine whose pods really run:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler; containerd with
// runc and the CNI bridge; kubelet and kube-proxy; a NetworkPolicy controller; and a
// registry the node pulls its images from. See ../shared/tools/node.md for what each
// setting is for.
//
// Its processes are detached: they outlive the command that started them (make
// node-up), and Down stops them by the PIDs Up recorded, then removes everything the
// node added to the machine — pod tasks, mounts, network namespaces, iptables chains,
// the bridge, the node's address, cgroups and kernel settings.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config says where the node keeps its state and what it runs.
type Config struct {
	// Dir holds the node's state, configuration and logs.
	Dir string
	// Bin holds etcd and the Kubernetes binaries (hack/install-kube.sh).
	Bin string
	// Pause is a static program that waits for SIGTERM: the pod sandbox's image.
	Pause string
	// Address is added to loopback for the API server, the kubelet and the registry;
	// pods reach the machine there (default 10.200.0.1).
	Address string
	// PodCIDR is the bridge's subnet (default 10.244.0.0/24); ServiceCIDR the
	// Services' (default 10.96.0.0/16).
	PodCIDR, ServiceCIDR string
	// CoreDNS, when set, is the CoreDNS binary (hack/install-coredns.sh) that serves
	// cluster DNS (cluster.local) on the node address, as the kube-dns Service.
	CoreDNS string
	// NetworkPolicy, when set, is the NetworkPolicy enforcer (hack/install-netpol.sh)
	// that the node runs.
	NetworkPolicy string
}

// Name is the node's name, and the prefix of what it adds to the machine.
const Name = "evalflow-node"

// bridge is the CNI bridge's interface.
const bridge = "evalflow0"

// apiPort is the API server's port on the node address.
const apiPort = 6443

func (c *Config) defaults() {
	if c.Address == "" {
		c.Address = "10.200.0.1"
	}
	if c.PodCIDR == "" {
		c.PodCIDR = "10.244.0.0/24"
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = "10.96.0.0/16"
	}
}

// Node is a running node, as Up leaves it and node.json records it.
type Node struct {
	Dir     string `json:"dir"`
	Address string `json:"address"`
	// API is the API server's URL; Kubeconfig the path of an admin kubeconfig for it.
	API        string `json:"api"`
	Kubeconfig string `json:"kubeconfig"`
	// Registry is HOST:PORT of the plain-HTTP registry the node pulls from, which
	// pods reach too.
	Registry string `json:"registry"`
	// DNS is the kube-dns Service's address, "" without cluster DNS.
	DNS string `json:"dns,omitempty"`
	// AdminToken is the admin's (system:masters) bearer token; CA the API server's
	// serving certificate.
	AdminToken string `json:"-"`
	CA         []byte `json:"-"`
	// Machine is what the node changed on the machine, for Down to put back.
	Machine machine `json:"machine"`
	pki     pki
	// kubeletStarted is when Up started the kubelet: the node is Ready once it says so.
	kubeletStarted time.Time
}

// machine is the state of the machine before Up, for Down.
type machine struct {
	Sysctls        map[string]string `json:"sysctls"`
	RunContainerd  bool              `json:"run_containerd"`
	VarLibCNI      bool              `json:"var_lib_cni"`
	NetnsBefore    []string          `json:"netns_before"`
	PodCIDR        string            `json:"pod_cidr"`
	ServiceCIDR    string            `json:"service_cidr"`
	ContainerdSock string            `json:"containerd_sock"`
}

// Up brings the node up and waits until it is Ready. A node already running in
// cfg.Dir is returned as it is; one half up (a process gone) is taken down first.
func Up(ctx context.Context, cfg Config) (n *Node, err error) {
	cfg.defaults()
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, err
	}
	if n, err := Load(cfg.Dir); err == nil {
		if n.healthy(ctx) == nil {
			return n, nil
		}
		if err := Down(cfg.Dir); err != nil {
			return nil, fmt.Errorf("node: take down the node half up in %s: %w", cfg.Dir, err)
		}
	}
	if err := preflight(cfg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	n = &Node{Dir: cfg.Dir, Address: cfg.Address, API: "https://" + net.JoinHostPort(cfg.Address, strconv.Itoa(apiPort)),
		Kubeconfig: filepath.Join(cfg.Dir, "kubeconfig"), AdminToken: randomHex(16)}
	n.Machine = machine{Sysctls: readSysctls(), RunContainerd: exists("/run/containerd"), VarLibCNI: exists("/var/lib/cni"),
		NetnsBefore: netns(), PodCIDR: cfg.PodCIDR, ServiceCIDR: cfg.ServiceCIDR,
		ContainerdSock: filepath.Join(cfg.Dir, "containerd", "containerd.sock")}
	// From here on, whatever fails leaves the machine as it was.
	if err := n.save(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if derr := Down(cfg.Dir); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	if err := run("ip", "addr", "add", cfg.Address+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	for _, stage := range []func(context.Context, Config) error{
		n.startRegistry, n.pushPause, n.startControlPlane, n.startDNS, n.startContainerd, n.startKubelet, n.startProxy, n.startNetworkPolicy, n.startStorage, n.waitAccounts,
	} {
		if err := stage(ctx, cfg); err != nil {
			return nil, err
		}
		if err := n.save(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Load reads the node recorded in dir.
func Load(dir string) (*Node, error) {
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if err != nil {
		return nil, err
	}
	var n Node
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("node: %s/node.json: %w", dir, err)
	}
	if tok, err := os.ReadFile(filepath.Join(dir, "admin.token")); err == nil {
		n.AdminToken = strings.TrimSpace(string(tok))
	}
	n.CA, _ = os.ReadFile(filepath.Join(dir, "certs", "apiserver.crt"))
	return &n, nil
}

func (n *Node) save() error {
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "admin.token"), []byte(n.AdminToken+"\n"), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.Dir, "node.json"), b, 0o644)
}

// preflight refuses to start where the node cannot run or another one is up.
func preflight(cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("node: needs root (it adds an address, a bridge, iptables rules and mounts)")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(cfg.Bin, b)); err != nil {
			return fmt.Errorf("node: %s not built (hack/install-kube.sh builds it): %w", b, err)
		}
	}
	for _, p := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip6tables", "ip", "docker-registry"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("node: %s not installed (make node-deps installs containerd, runc, containernetworking-plugins, iptables, docker-registry): %w", p, err)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return fmt.Errorf("node: the CNI plugins are not installed (containernetworking-plugins): %w", err)
	}
	if _, err := os.Stat(cfg.Pause); err != nil {
		return fmt.Errorf("node: the pause program: %w", err)
	}
	if hasAddress(cfg.Address) {
		return fmt.Errorf("node: %s is on this machine already: is a node up (make node-down)?", cfg.Address)
	}
	if chains := ourChains(); len(chains) > 0 {
		return fmt.Errorf("node: iptables chains of a node are here already (%s): is a node up (make node-down)?", strings.Join(chains, ", "))
	}
	if len(filepath.Join(cfg.Dir, "containerd", "containerd.sock.ttrpc")) > 100 {
		return fmt.Errorf("node: state directory %s is too long for containerd's socket path", cfg.Dir)
	}
	return nil
}

// healthy is nil when every recorded process runs and the API server is ready.
func (n *Node) healthy(ctx context.Context) error {
	procs, err := recorded(n.Dir)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if !p.alive() {
			return fmt.Errorf("node: %s (pid %d) is not running", p.Name, p.PID)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return n.nodeReady(ctx)
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("node: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func hasAddress(a string) bool {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, ad := range addrs {
			if ip, _, err := net.ParseCIDR(ad.String()); err == nil && ip.String() == a {
				return true
			}
		}
	}
	return false
}

func netns() []string {
	var names []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
