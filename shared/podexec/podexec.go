// Package podexec runs a command in a pod's container through the API server and the
// kubelet (never the pod's network), speaking Kubernetes' exec protocol over a
// WebSocket (v5.channel.k8s.io) with plain HTTP and gorilla/websocket: how the runner
// hands the sandbox pod its batches, without linking a Kubernetes client (whose
// packages register every API type at start).
package podexec

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Pod is a pod to exec in, reached at an API server with a bearer token.
type Pod struct {
	Namespace, Name string
	server          string // https://HOST:PORT
	tls             *tls.Config
	token           func() (string, error)
}

// New is pod namespace/name at server (https://HOST:PORT), spoken to with tlsConfig
// and, when token is set, the bearer token it gives at each call.
func New(server string, tlsConfig *tls.Config, token func() (string, error), namespace, name string) *Pod {
	return &Pod{Namespace: namespace, Name: name, server: strings.TrimSuffix(server, "/"), tls: tlsConfig, token: token}
}

// InCluster is pod namespace/name reached from a pod of the same cluster with the
// token in tokenFile (read at each call: the kubelet renews it) and the cluster's CA
// in caFile.
func InCluster(namespace, name, tokenFile, caFile string) (*Pod, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fmt.Errorf("podexec: pod %s/%s: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)", namespace, name)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("podexec: the cluster's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("podexec: the cluster's CA %s holds no certificate", caFile)
	}
	token := func() (string, error) {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return "", fmt.Errorf("podexec: token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return New("https://"+net.JoinHostPort(host, port), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, token, namespace, name), nil
}

// header is the request's Authorization.
func (p *Pod) header() (http.Header, error) {
	h := http.Header{}
	if p.token != nil {
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		h.Set("Authorization", "Bearer "+tok)
	}
	return h, nil
}

func (p *Pod) path() string {
	return "/api/v1/namespaces/" + url.PathEscape(p.Namespace) + "/pods/" + url.PathEscape(p.Name)
}

// podStatus is what WaitRunning reads of a pod.
type podStatus struct {
	Status struct {
		Phase             string `json:"phase"`
		Message           string `json:"message"`
		ContainerStatuses []struct {
			State struct {
				Waiting *struct{ Reason, Message string } `json:"waiting"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// WaitRunning waits until the pod runs; its error says what the pod waits for.
func (p *Pod) WaitRunning(ctx context.Context) error {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: p.tls}, Timeout: 30 * time.Second}
	last := "not asked yet"
	for {
		st, err := p.status(ctx, client)
		switch {
		case err != nil:
			last = err.Error()
		case st.Status.Phase == "Running":
			return nil
		case st.Status.Phase == "Failed" || st.Status.Phase == "Succeeded":
			return fmt.Errorf("podexec: pod %s/%s has ended (%s: %s)", p.Namespace, p.Name, st.Status.Phase, st.Status.Message)
		default:
			last = st.Status.Phase
			for _, c := range st.Status.ContainerStatuses {
				if w := c.State.Waiting; w != nil {
					last += ", " + w.Reason + ": " + w.Message
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("podexec: pod %s/%s is not running (%s): %w", p.Namespace, p.Name, last, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func (p *Pod) status(ctx context.Context, client *http.Client) (*podStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.server+p.path(), nil)
	if err != nil {
		return nil, err
	}
	if req.Header, err = p.header(); err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("get pod: %s: %s", resp.Status, b)
	}
	var st podStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("get pod: %w", err)
	}
	return &st, nil
}

// The streams of the exec protocol: each message's first byte.
const (
	streamStdin  = 0
	streamStdout = 1
	streamStderr = 2
	streamError  = 3
	streamClose  = 255 // v5: the stream in the next byte is closed
)

// Protocol is the exec protocol spoken: v5 can close stdin, which a command reading
// it to its end needs.
const Protocol = "v5.channel.k8s.io"

// Exec runs command in the pod's (only) container with stdin, writing what it prints
// on stdout to stdout; an error says how it ended otherwise, quoting the end of
// what it printed on stderr.
func (p *Pod) Exec(ctx context.Context, command []string, stdin io.Reader, stdout io.Writer) error {
	q := url.Values{"stdout": {"true"}, "stderr": {"true"}, "stdin": {"true"}}
	q["command"] = command
	u := "wss" + strings.TrimPrefix(p.server, "https") + p.path() + "/exec?" + q.Encode()
	h, err := p.header()
	if err != nil {
		return err
	}
	h.Set("Sec-WebSocket-Protocol", Protocol)
	// Each message in one frame: the API server reads a frame as a message, so a
	// message cut into frames would lose all but its first.
	d := websocket.Dialer{TLSClientConfig: p.tls, HandshakeTimeout: 30 * time.Second,
		ReadBufferSize: chunk + 1024, WriteBufferSize: chunk + 1024}
	conn, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			err = fmt.Errorf("%w: %s: %s", err, resp.Status, b)
		}
		return fmt.Errorf("podexec: exec in %s/%s: %w", p.Namespace, p.Name, err)
	}
	defer conn.Close()
	if conn.Subprotocol() != Protocol {
		return fmt.Errorf("podexec: exec in %s/%s: the API server speaks %q, not %s (Kubernetes 1.30 or later)", p.Namespace, p.Name, conn.Subprotocol(), Protocol)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	sent := make(chan error, 1)
	go func() { sent <- send(conn, stdin) }()
	var stderr strings.Builder
	var status []byte
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			// The command's status came, or the server closed as it does after it.
			if status != nil || websocket.IsCloseError(err, websocket.CloseNormalClosure) || errors.Is(err, io.EOF) {
				break
			}
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("podexec: exec in %s/%s: %w", p.Namespace, p.Name, err)
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case streamStdout:
			if _, err := stdout.Write(msg[1:]); err != nil {
				return fmt.Errorf("podexec: exec in %s/%s: %w", p.Namespace, p.Name, err)
			}
		case streamStderr:
			if stderr.Len() < 64<<10 {
				stderr.Write(msg[1:])
			}
		case streamError:
			status = append(status, msg[1:]...)
		}
	}
	if err := <-sent; err != nil {
		return fmt.Errorf("podexec: exec in %s/%s: stdin: %w", p.Namespace, p.Name, err)
	}
	return ended(status, stderr.String())
}

// chunk is the most stdin a message carries.
const chunk = 32 << 10

// send writes stdin to the stdin stream, then closes that stream.
func send(conn *websocket.Conn, stdin io.Reader) error {
	buf := make([]byte, chunk)
	for stdin != nil {
		n, err := stdin.Read(buf)
		if n > 0 {
			if werr := conn.WriteMessage(websocket.BinaryMessage, append([]byte{streamStdin}, buf[:n]...)); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return conn.WriteMessage(websocket.BinaryMessage, []byte{streamClose, streamStdin})
}

// ended reads the error stream's status: Success, or how the command failed.
func ended(status []byte, stderr string) error {
	var st struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}
	if len(status) == 0 {
		return errors.New("podexec: the exec ended without a status")
	}
	if err := json.Unmarshal(status, &st); err != nil {
		return fmt.Errorf("podexec: the exec's status %.200q: %w", status, err)
	}
	if st.Status == "Success" {
		return nil
	}
	msg := "podexec: " + st.Message
	if s := strings.TrimSpace(stderr); s != "" {
		msg += ": " + s[max(0, len(s)-500):]
	}
	return errors.New(msg)
}
