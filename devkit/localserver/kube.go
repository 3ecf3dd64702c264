package localserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The cluster's own programs, which hack/cluster-tools.sh builds together (the
// packages they share compiled once) into ClusterToolsDir: etcd and the Kubernetes
// commands, CoreDNS for cluster DNS, and Traefik, Knative Serving's networking layer.
const (
	KubeVersion    = "1.34.4"
	EtcdVersion    = "3.6.5"
	CoreDNSVersion = "1.12.4"
	TraefikVersion = "3.6.12"
)

// ClusterToolsDir is where hack/cluster-tools.sh caches them, named by every version.
func ClusterToolsDir() string {
	return filepath.Join(CacheDir(), fmt.Sprintf("cluster-k8s-v%s-etcd-v%s-coredns-v%s-traefik-v%s",
		KubeVersion, EtcdVersion, CoreDNSVersion, TraefikVersion))
}

// KubeBinDir holds etcd and the Kubernetes commands: $EVALFLOW_KUBE, or
// ClusterToolsDir.
func KubeBinDir() string {
	if p := os.Getenv("EVALFLOW_KUBE"); p != "" {
		return p
	}
	return ClusterToolsDir()
}

// CoreDNSBinary is CoreDNS: $EVALFLOW_COREDNS, or in ClusterToolsDir.
func CoreDNSBinary() string {
	if p := os.Getenv("EVALFLOW_COREDNS"); p != "" {
		return p
	}
	return filepath.Join(ClusterToolsDir(), "coredns")
}

// NetworkPolicyBinary is the node's NetworkPolicy enforcer, $EVALFLOW_NETPOL
// (hack/install-netpol.sh builds it, named by its sources' hash), or "".
func NetworkPolicyBinary() string { return os.Getenv("EVALFLOW_NETPOL") }

// TraefikBinary is Traefik, in ClusterToolsDir.
func TraefikBinary() string { return filepath.Join(ClusterToolsDir(), "traefik") }

// CacheDir is where heavy builds are cached outside the clone: $EVALFLOW_CACHE, or
// ~/.cache/evalflow.
func CacheDir() string {
	if c := os.Getenv("EVALFLOW_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "evalflow")
}

// KubeUser is an identity the API server accepts by bearer token.
type KubeUser struct {
	Name   string
	Token  string
	Groups []string
}

// Kube is a real Kubernetes control plane on loopback: etcd and kube-apiserver with
// token authentication and RBAC, and optionally kube-controller-manager running the
// Job controller and the garbage collector. No node runs pods.
type Kube struct {
	URL   string // https://127.0.0.1:PORT
	CA    []byte // PEM of the API server's self-signed serving certificate
	Admin KubeUser
	procs []*Proc
}

// KubeOptions tune StartKube.
type KubeOptions struct {
	// Users are accepted besides the admin (a system:masters member).
	Users []KubeUser
	// Controllers also runs kube-controller-manager (Jobs, garbage collection, TTL).
	Controllers bool
}

// StartKube starts the control plane from the binaries in bin, its state in dir.
func StartKube(ctx context.Context, bin, dir string, o KubeOptions) (k *Kube, err error) {
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("localserver: %s not built (hack/install-kube.sh builds it): %w", b, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	k = &Kube{Admin: KubeUser{Name: "evalflow-admin", Token: randomToken(), Groups: []string{"system:masters"}}}
	defer func() {
		if err != nil {
			k.Stop()
		}
	}()
	ports, err := FreePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL, err := k.startEtcd(ctx, bin, dir, ports[0], ports[1])
	if err != nil {
		return nil, err
	}
	saKey, err := k.startAPIServer(ctx, bin, dir, etcdURL, ports[2], o)
	if err != nil {
		return nil, err
	}
	if o.Controllers {
		if err := k.startControllers(ctx, bin, dir, saKey); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// startEtcd starts etcd on the client and peer ports; it returns its client URL.
func (k *Kube) startEtcd(ctx context.Context, bin, dir string, clientPort, peerPort int) (string, error) {
	client, peer := "http://"+addr(clientPort), "http://"+addr(peerPort)
	etcd, err := Start(ctx, dir, "etcd", nil, HTTPOK(client+"/health"), 20*time.Second, filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"), "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer,
		"--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return "", err
	}
	k.procs = append(k.procs, etcd)
	return client, nil
}

// startAPIServer starts kube-apiserver on port with RBAC, the users' static tokens
// and a service account signing key, which it returns the path of.
func (k *Kube) startAPIServer(ctx context.Context, bin, dir, etcd string, port int, o KubeOptions) (saKey string, err error) {
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := writeServiceAccountKeys(saKey, saPub); err != nil {
		return "", err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	var csv strings.Builder
	for i, u := range append([]KubeUser{k.Admin}, o.Users...) {
		fmt.Fprintf(&csv, "%s,%s,uid-%d,%q\n", u.Token, u.Name, i, strings.Join(u.Groups, ","))
	}
	if err := os.WriteFile(tokens, []byte(csv.String()), 0o600); err != nil {
		return "", err
	}
	k.URL = "https://" + addr(port)
	certs := filepath.Join(dir, "certs")
	args := []string{"--etcd-servers", etcd, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(port), "--cert-dir", certs, "--service-cluster-ip-range", "10.0.0.0/24",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--token-auth-file", tokens, "--authorization-mode", "RBAC"}
	if !o.Controllers {
		args = append(args, "--disable-admission-plugins", "ServiceAccount")
	}
	api, err := Start(ctx, dir, "kube-apiserver", nil, TLSOK(k.URL+"/readyz"), 60*time.Second, filepath.Join(bin, "kube-apiserver"), args...)
	if err != nil {
		return "", err
	}
	k.procs = append(k.procs, api)
	if k.CA, err = os.ReadFile(filepath.Join(certs, "apiserver.crt")); err != nil {
		return "", fmt.Errorf("localserver: kube-apiserver's serving certificate: %w", err)
	}
	return saKey, nil
}

// startControllers starts kube-controller-manager with the controllers evalflow's
// Jobs need (job, garbage collector, TTL, service accounts, namespaces), and the
// protection of claims, which lets a deleted claim go.
func (k *Kube) startControllers(ctx context.Context, bin, dir, saKey string) error {
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(kubeconfig, k.Kubeconfig(k.Admin.Token, "default"), 0o600); err != nil {
		return err
	}
	kcm, err := Start(ctx, dir, "kube-controller-manager", nil, func(context.Context) error { return nil }, time.Second,
		filepath.Join(bin, "kube-controller-manager"), "--kubeconfig", kubeconfig, "--bind-address", "127.0.0.1",
		"--secure-port", "0", "--leader-elect=false",
		"--controllers", "job-controller,serviceaccount-controller,serviceaccount-token-controller,garbage-collector-controller,ttl-after-finished-controller,namespace-controller,persistentvolumeclaim-protection-controller",
		"--service-account-private-key-file", saKey, "--use-service-account-credentials=false")
	if err != nil {
		return err
	}
	k.procs = append(k.procs, kcm)
	return nil
}

// Kubeconfig is a kubeconfig reaching the API server as the user of token, with
// namespace as its context's namespace. Everything is inline: no file is referenced.
func (k *Kube) Kubeconfig(token, namespace string) []byte {
	return Kubeconfig(k.URL, k.CA, token, namespace)
}

// Kubeconfig is a kubeconfig reaching the API server at server (its certificate ca,
// PEM) as the user of token, in namespace; everything inline.
func Kubeconfig(server string, ca []byte, token, namespace string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
    token: %s
contexts:
- name: local
  context: {cluster: local, user: user, namespace: %s}
current-context: local
`, server, b64(ca), token, namespace))
}

// Stop ends the control plane, the API server before etcd.
func (k *Kube) Stop() {
	for i := len(k.procs) - 1; i >= 0; i-- {
		k.procs[i].Stop()
	}
}

func writeServiceAccountKeys(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
