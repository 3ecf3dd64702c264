package openai

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestContinuationLogprobSumsOnlyTheContinuationsTokens(t *testing.T) {
	// "Answer: A" echoed as tokens "Answer", ":", " A", then one generated token "\n".
	var r CompletionResponse
	json.Unmarshal([]byte(`{"choices":[{"text":"Answer: A\n","logprobs":{
		"tokens":["Answer",":"," A","\n"],
		"token_logprobs":[null,-0.5,-1.25,-3.0],
		"text_offset":[0,6,7,9]}}]}`), &r)

	got, err := r.ContinuationLogprob(len("Answer:"), len("Answer: A"))

	if err != nil || math.Abs(got-(-1.25)) > 1e-9 {
		t.Fatalf("= %v, %v; want -1.25 (the generated token left out)", got, err)
	}
	var none CompletionResponse
	json.Unmarshal([]byte(`{"choices":[{"text":"n"}]}`), &none)
	if _, err := none.ContinuationLogprob(0, 1); err != ErrNoPromptLogprobs {
		t.Fatalf("no logprobs: err = %v", err)
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
