package openai

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
)

func TestContinuationLogprobSumsOnlyTheContinuationsTokens(t *testing.T) {
	// "Answer: A" echoed as tokens "Answer", ":", " A", then one generated token "\n".
	var r CompletionResponse
	json.Unmarshal([]byte(`{"choices":[{"text":"Answer: A\n","logprobs":{
		"tokens":["Answer",":"," A","\n"],
		"token_logprobs":[null,-0.5,-1.25,-3.0],
		"text_offset":[0,6,7,9]}}]}`), &r)

	got, err := r.ContinuationLogprob("Answer:", " A")

	if err != nil || math.Abs(got-(-1.25)) > 1e-9 {
		t.Fatalf("= %v, %v; want -1.25 (the generated token left out)", got, err)
	}
	var none CompletionResponse
	json.Unmarshal([]byte(`{"choices":[{"text":"n"}]}`), &none)
	if _, err := none.ContinuationLogprob("", "n"); err != ErrNoPromptLogprobs {
		t.Fatalf("no logprobs: err = %v", err)
	}
}

// "Café’s answer:" + " B" echoed, as a server that counts characters (OpenAI, vLLM) and
// one that counts bytes give it: the continuation starts at character 14, byte 18.
// Bytes read as characters (or the other way round) would score ":" or the generated
// token instead.
func TestContinuationLogprobReadsTheServersOffsetUnit(t *testing.T) {
	const body = `{"choices":[{"text":"Café’s answer: B.","logprobs":{
		"tokens":["Caf","é","’","s"," answer",":"," B","."],
		"token_logprobs":[null,-0.1,-0.2,-0.3,-0.4,-0.5,-1.5,-9],
		"text_offset":%s}}]}`
	cases := map[string]string{
		"characters": `[0,3,4,5,6,13,14,16]`,
		"bytes":      `[0,3,5,8,9,16,17,19]`,
	}
	for unit, offsets := range cases {
		var r CompletionResponse
		if err := json.Unmarshal([]byte(strings.Replace(body, "%s", offsets, 1)), &r); err != nil {
			t.Fatal(err)
		}

		got, err := r.ContinuationLogprob("Café’s answer:", " B")

		if err != nil || got != -1.5 {
			t.Errorf("%s: = %v, %v; want -1.5, the log-probability of \" B\"", unit, got, err)
		}
	}
	// Byte-fallback tokens (one byte each) tell nothing by their length: the offset
	// past the text's length in characters does.
	var fallback CompletionResponse
	json.Unmarshal([]byte(`{"choices":[{"text":"é: B.","logprobs":{
		"tokens":["<0xC3>","<0xA9>",":"," B","."],
		"token_logprobs":[null,-0.1,-0.2,-1.5,-9],
		"text_offset":[0,1,2,3,5]}}]}`), &fallback)
	if got, err := fallback.ContinuationLogprob("é:", " B"); err != nil || got != -1.5 {
		t.Errorf("byte-fallback tokens: = %v, %v; want -1.5", got, err)
	}
}

// An endpoint that echoes the key in its error (a stand-in: no real server here does).
func TestAnErrorBodyNeverCarriesTheKey_FakeEndpoint(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad key: "+r.Header.Get("Authorization"), http.StatusUnauthorized)
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, APIKey: "sk-echo-canary-1"}

	_, err := c.Chat(context.Background(), ChatRequest{Model: "m"})

	if err == nil || strings.Contains(err.Error(), "sk-echo-canary-1") || !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("err = %v", err)
	}
}

// rateLimited is a real reverse proxy in front of the model server that answers the
// first request 429 with Retry-After (as header gives it), as a rate-limiting gateway
// does, and records when each request arrived.
func rateLimited(t *testing.T, target string, header func(now time.Time) string) (string, *[]time.Time) {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		now := time.Now()
		times = append(times, now)
		first := len(times) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", header(now))
			http.Error(w, "rate limited", http.StatusTooManyRequests)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &times
}

// A 429's Retry-After is honoured in both of its forms: seconds, and an HTTP date
// (whose one-second resolution the retry waits out).
func TestRetryAfterInSecondsOrAsADateIsWaitedOut(t *testing.T) {
	model := testserver.Ollama(t, 0)
	forms := map[string]func(now time.Time) string{
		"seconds": func(time.Time) string { return "2" },
		"date":    func(now time.Time) string { return now.Add(3 * time.Second).UTC().Format(http.TimeFormat) },
	}
	for name, header := range forms {
		t.Run(name, func(t *testing.T) {
			proxy, times := rateLimited(t, model, header)
			c := &Client{BaseURL: evalflow.APIBase(proxy)}

			_, err := c.Chat(context.Background(), ChatRequest{Model: testserver.Model,
				Messages: []Message{{Role: "user", Content: "Once upon a time"}}, MaxTokens: 4})

			if err != nil {
				t.Fatal(err)
			}
			if len(*times) != 2 {
				t.Fatalf("%d requests; want the refused one and one retry", len(*times))
			}
			// The date form names a whole second at least 2 s ahead; the seconds form 2 s.
			if waited := (*times)[1].Sub((*times)[0]); waited < 2*time.Second-50*time.Millisecond {
				t.Errorf("retried after %v; Retry-After asked for 2 s or more", waited)
			}
		})
	}
}

func TestRetryAfterParsesBothForms(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"Mon, 30 Nov 2026 12:00:09 GMT": 9 * time.Second,
		"Mon, 30 Nov 2026 11:59:00 GMT": 0, // past
	}
	for h, want := range cases {
		if got := retryAfter(h, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", h, got, want)
		}
	}
}

// verify's question: the models an endpoint serves, from a real server.
func TestModelsListsWhatTheServerServes(t *testing.T) {
	c := &Client{BaseURL: evalflow.APIBase(testserver.Ollama(t, 0))}

	models, err := c.Models(context.Background())

	if err != nil || !slices.ContainsFunc(models, func(m Model) bool { return strings.HasPrefix(m.ID, testserver.Model) }) {
		t.Fatalf("models %v, %v; want %s among them", models, err, testserver.Model)
	}
}

const hostileKey = "sk-CANARY-0123456789abcdef0123456789abcd"

// leaksKey reports whether text holds 8 or more characters of hostileKey in a row,
// ASCII case ignored.
func leaksKey(text string) bool {
	lower, key := strings.ToLower(text), strings.ToLower(hostileKey)
	for i := 0; i+8 <= len(key); i++ {
		if strings.Contains(lower, key[i:i+8]) {
			return true
		}
	}
	return false
}

// An endpoint that answers with the key JSON-escaped, percent-encoded or in base64
// (a hostile endpoint: no real server does this) gets no form of it into the answer
// the client hands on.
func TestAnAnswerNeverCarriesTheKeyInAnyEncoding_HostileEndpoint(t *testing.T) {
	escaped := strings.ReplaceAll(hostileKey, "-", `\u002d`)
	forms := []string{escaped, url.QueryEscape(hostileKey), strings.ToUpper(hostileKey),
		base64.StdEncoding.EncodeToString([]byte("Bearer " + hostileKey))}
	for _, form := range forms {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"your key is %s"}}]}`, form)
		}))
		c := &Client{BaseURL: srv.URL, APIKey: hostileKey}
		res, err := c.Chat(context.Background(), ChatRequest{Model: "m"})
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Choices[0].Message.Content; leaksKey(got) || !strings.Contains(got, "[redacted]") {
			t.Errorf("the key sent back as %q reaches the answer as %q", form, got)
		}
	}
}

// An error body is redacted before it is cut: wherever the key stands around the cut,
// no part of it (8 characters or more) is in the error.
func TestAnErrorBodyIsRedactedBeforeItIsCut_HostileEndpoint(t *testing.T) {
	var pad atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, strings.Repeat("x", int(pad.Load()))+hostileKey+strings.Repeat("y", 64))
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, APIKey: hostileKey, MaxTries: 1}
	for p := errorBodyShown - len(hostileKey) - 2; p <= errorBodyShown+2; p++ {
		pad.Store(int64(p))
		_, err := c.Chat(context.Background(), ChatRequest{Model: "m"})
		if err == nil || leaksKey(err.Error()) {
			t.Fatalf("key at byte %d: error %v", p, err)
		}
	}
}
