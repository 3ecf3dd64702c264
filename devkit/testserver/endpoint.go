package testserver

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Endpoint is a real reverse proxy in front of a model server that counts the
// samples asked (by a chat request's messages, or a completion's prompt)
// and answers each after a delay, as a slower endpoint would. It keeps the
// traceparent headers the requests carried.
type Endpoint struct {
	URL          string // http://HOST:PORT
	mu           sync.Mutex
	asked        map[string]int
	traceparents []string
}

// CountingEndpoint serves an Endpoint in front of target on a free port of host
// (127.0.0.1 when empty) for the test.
func CountingEndpoint(t testing.TB, host, target string, delay time.Duration) *Endpoint {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // requests cut by an interruption are expected
	e := &Endpoint{URL: "http://" + l.Addr().String(), asked: map[string]int{}}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
			Prompt   string                     `json:"prompt"`
		}
		if json.Unmarshal(b, &req) == nil && (len(req.Messages) > 0 || req.Prompt != "") {
			key := req.Prompt
			if len(req.Messages) > 0 { // the whole conversation: a description or examples may open many
				contents := make([]string, len(req.Messages))
				for i, m := range req.Messages {
					contents[i] = m.Content
				}
				key = strings.Join(contents, "\x00")
			}
			e.mu.Lock()
			e.asked[key]++
			if tp := r.Header.Get("Traceparent"); tp != "" {
				e.traceparents = append(e.traceparents, tp)
			}
			e.mu.Unlock()
		}
		time.Sleep(delay)
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return e
}

// TraceParents are the traceparent headers of the samples' requests so far.
func (e *Endpoint) TraceParents() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.traceparents...)
}

// Asked is how many times each sample was asked so far.
func (e *Endpoint) Asked() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.asked))
	for k, v := range e.asked {
		out[k] = v
	}
	return out
}

// EchoingEndpoint serves, for the test, a real reverse proxy in front of the model
// server target that echoes the caller's Authorization header back — as it is, in
// base64 and JSON-escaped — in every answer: appended to each generated text, a model
// listed, and every error body, as a careless (or hostile) gateway or a model
// repeating its input would. It returns its URL: target's, on the proxy.
func EchoingEndpoint(t testing.TB, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	path := u.Path
	u.Path = ""
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		// The header as it is, in base64, and JSON-escaped (which a JSON decoder turns
		// back into the header itself).
		auth := resp.Request.Header.Get("Authorization")
		echo := " (you sent Authorization: " + auth + "; in base64 " + base64.StdEncoding.EncodeToString([]byte(auth)) + "; escaped " + escapedMarker + ")"
		var answer map[string]any
		switch {
		case resp.StatusCode >= 400:
			b = append(bytes.TrimSpace(b), echo...)
		case json.Unmarshal(b, &answer) == nil:
			if models, ok := answer["data"].([]any); ok { // a listing of models: one more, named by it
				answer["data"] = append(models, map[string]any{"id": "echo" + echo, "object": "model"})
			}
			choices, _ := answer["choices"].([]any)
			for _, c := range choices {
				c, _ := c.(map[string]any)
				if m, ok := c["message"].(map[string]any); ok {
					m["content"] = fmt.Sprint(m["content"]) + echo
				}
				if text, ok := c["text"].(string); ok {
					c["text"] = text + echo
				}
			}
			b, _ = json.Marshal(answer)
		}
		b = bytes.ReplaceAll(b, []byte(escapedMarker), []byte(jsonEscaped(auth)))
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", fmt.Sprint(len(b)))
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: rp}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + path
}

// escapedMarker stands in an echo for the header JSON-escaped, put in after the answer
// is encoded (an encoder would escape the backslashes).
const escapedMarker = "<<escaped>>"

// jsonEscaped is s with every character a JSON \u escape.
func jsonEscaped(s string) string {
	var b strings.Builder
	for _, c := range s {
		fmt.Fprintf(&b, `\u%04x`, c)
	}
	return b.String()
}

// AnsweringEndpoint is an OpenAI-compatible endpoint on a free port of host
// (127.0.0.1 when empty) that answers each chat request by its last message, from
// answers ("" for any other): a stand-in for a model that writes those completions
// (the tiny model writes no working code, and no hostile code on purpose). It returns
// the base URL.
func AnsweringEndpoint(t testing.TB, host string, answers map[string]string) string {
	t.Helper()
	inTurn := make(map[string][]string, len(answers))
	for k, v := range answers {
		inTurn[k] = []string{v}
	}
	return AnsweringInTurn(t, host, inTurn, nil)
}

// AnsweringInTurn is AnsweringEndpoint answering each message with its answers in
// turn, again from the first after the last; each request's body, decoded, goes to
// seen when set.
func AnsweringInTurn(t testing.TB, host string, answers map[string][]string, seen func(map[string]any)) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(cmp.Or(host, "127.0.0.1"), "0"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	asked := map[string]int{}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		if err := json.Unmarshal(b, &req); err != nil || len(req.Messages) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if seen != nil {
			var body map[string]any
			json.Unmarshal(b, &body)
			seen(body)
		}
		msg, text := req.Messages[len(req.Messages)-1].Content, ""
		mu.Lock()
		if list := answers[msg]; len(list) > 0 {
			text = list[asked[msg]%len(list)]
		}
		asked[msg]++
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": text}}}, "usage": map[string]any{"prompt_tokens": 10, "completion_tokens": 10}})
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}
