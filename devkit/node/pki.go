package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/evalflow/evalflow/devkit/localserver"
)

// pki is the node's own certificates: a CA that signs the kubelet's serving
// certificate and the API server's client certificate for the kubelet (so that the
// kubelet serves logs to the API server only), and the service account keys.
type pki struct {
	ca, kubeletCert, kubeletKey, clientCert, clientKey, saKey, saPub string
}

func writePKI(dir, address string) (pki, error) {
	p := pki{ca: filepath.Join(dir, "ca.crt"), kubeletCert: filepath.Join(dir, "kubelet.crt"), kubeletKey: filepath.Join(dir, "kubelet.key"),
		clientCert: filepath.Join(dir, "apiserver-kubelet-client.crt"), clientKey: filepath.Join(dir, "apiserver-kubelet-client.key"),
		saKey: filepath.Join(dir, "sa.key"), saPub: filepath.Join(dir, "sa.pub")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	caTmpl := template(pkix.Name{CommonName: Name + "-ca"})
	caTmpl.IsCA, caTmpl.BasicConstraintsValid, caTmpl.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	if err := writePEM(p.ca, "CERTIFICATE", caDER); err != nil {
		return p, err
	}
	kubelet := template(pkix.Name{CommonName: Name})
	kubelet.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	kubelet.IPAddresses, kubelet.DNSNames = []net.IP{net.ParseIP(address)}, []string{Name}
	if err := issue(kubelet, caCert, caKey, p.kubeletCert, p.kubeletKey); err != nil {
		return p, err
	}
	client := template(pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}})
	client.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if err := issue(client, caCert, caKey, p.clientCert, p.clientKey); err != nil {
		return p, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return p, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return p, err
	}
	if err := writePEM(p.saKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return p, err
	}
	return p, writePEM(p.saPub, "PUBLIC KEY", pub)
}

// template is a certificate for subject, valid for five years.
func template(subject pkix.Name) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return &x509.Certificate{SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
}

func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("node: certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(keyPath, "EC PRIVATE KEY", kb)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// kubeconfig reaches the API server as the admin; everything is inline.
func (n *Node) kubeconfig() []byte {
	return localserver.Kubeconfig(n.API, n.CA, n.AdminToken, "default")
}

// client speaks to the API server, trusting its certificate.
func (n *Node) client() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(n.CA) {
		return nil, fmt.Errorf("node: no API server certificate in %s/certs", n.Dir)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

func randomHex(k int) string {
	b := make([]byte, k)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
