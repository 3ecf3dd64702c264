// Command llama-echo is a model server for the loglikelihood path: an OpenAI-compatible
// /v1/completions that, like vLLM and OpenAI's legacy API, scores an echoed prompt
// (echo + logprobs). ollama and llama.cpp's server both refuse echo, so this runs the
// same llama.cpp (through ollama's Go bindings) on the same GGUF, and returns each
// prompt token's log-probability given the tokens before it.
//
// It serves one model, one request at a time, greedy. It is built outside the
// workspace (cgo, llama.cpp headers) by hack/install-llama-echo.sh.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ollama/ollama/llama"
	"github.com/ollama/ollama/ml"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	model := flag.String("model", "", "GGUF file")
	name := flag.String("name", "", "model name served (default: the file's base name)")
	ctx := flag.Int("ctx", 2048, "context length in tokens")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*addr, *model, *name, *ctx, log); err != nil {
		log.Error("llama-echo", "error", err)
		os.Exit(1)
	}
}

func run(addr, path, name string, nctx int, log *slog.Logger) error {
	if path == "" {
		return errors.New("-model is required")
	}
	if name == "" {
		name = strings.TrimSuffix(path[strings.LastIndex(path, "/")+1:], ".gguf")
	}
	llama.BackendInit()
	m, err := llama.LoadModelFromFile(path, llama.ModelParams{UseMmap: true})
	if err != nil {
		return err
	}
	const batch = 512
	lc, err := llama.NewContextWithModel(m, llama.NewContextParams(nctx, batch, 1, runtime.NumCPU(), ml.FlashAttentionDisabled, ""))
	if err != nil {
		return err
	}
	b, err := llama.NewBatch(batch, 1, 0)
	if err != nil {
		return err
	}
	s := &server{name: name, model: m, lc: lc, batch: b, nctx: nctx}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("POST /v1/completions", s.complete)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The address line is how a parent process learns the port.
	fmt.Printf("listening on %s\n", l.Addr())
	log.Info("serving", "addr", l.Addr().String(), "model", name)
	return http.Serve(l, mux)
}

type server struct {
	name  string
	mu    sync.Mutex // one llama context: one request at a time
	model *llama.Model
	lc    *llama.Context
	batch *llama.Batch
	nctx  int
}

func (s *server) models(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{{"id": s.name, "object": "model", "owned_by": "llama-echo"}}})
}

type request struct {
	Model     string `json:"model"`
	Prompt    any    `json:"prompt"`
	MaxTokens *int   `json:"max_tokens"`
	Echo      bool   `json:"echo"`
	Logprobs  *int   `json:"logprobs"`
}

type logprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []*float64           `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

func (s *server) complete(w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	prompt, ok := req.Prompt.(string)
	if !ok {
		fail(w, http.StatusBadRequest, "prompt: only a single string is supported")
		return
	}
	if req.Model != s.name {
		fail(w, http.StatusNotFound, fmt.Sprintf("model %q not found", req.Model))
		return
	}
	maxTokens := 16
	if req.MaxTokens != nil {
		maxTokens = *req.MaxTokens
	}
	top := 0
	if req.Logprobs != nil {
		top = min(*req.Logprobs, 20)
	}
	s.mu.Lock()
	lp, text, promptTokens, err := s.score(prompt, maxTokens, top, req.Echo)
	s.mu.Unlock()
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	choice := map[string]any{"index": 0, "text": text, "finish_reason": "length"}
	if req.Logprobs != nil {
		choice["logprobs"] = lp
	} else {
		choice["logprobs"] = nil
	}
	generated := len(lp.Tokens)
	if req.Echo {
		generated -= promptTokens
	}
	reply(w, http.StatusOK, map[string]any{
		"id": "cmpl-llama-echo", "object": "text_completion", "model": s.name, "choices": []any{choice},
		"usage": map[string]int{"prompt_tokens": promptTokens, "completion_tokens": generated, "total_tokens": promptTokens + generated},
	})
}

// score runs the prompt through the model, then generates maxTokens greedily. With echo
// the logprobs cover the prompt's tokens (the first has none: nothing precedes it but
// BOS) and then the generated ones; without, only the generated ones.
func (s *server) score(prompt string, maxTokens, top int, echo bool) (*logprobs, string, int, error) {
	tokens, err := s.model.Tokenize(prompt, true, false)
	if err != nil {
		return nil, "", 0, err
	}
	bos := 0
	if s.model.AddBOSToken() && len(tokens) > 0 {
		bos = 1
	}
	if len(tokens)+maxTokens > s.nctx {
		return nil, "", 0, fmt.Errorf("prompt: %d tokens and max_tokens %d exceed the context length %d", len(tokens)-bos, maxTokens, s.nctx)
	}
	s.lc.KvCacheClear()
	rec := &recorder{s: s, lp: &logprobs{}, top: top}
	next, err := s.decodePrompt(tokens, bos, echo, rec)
	if err != nil {
		return nil, "", 0, err
	}
	if echo && len(rec.lp.TokenLogprobs) > 0 {
		// OpenAI's and vLLM's convention: the first echoed token has no log-probability.
		rec.lp.TokenLogprobs[0], rec.lp.TopLogprobs[0] = nil, nil
	}
	text, err := s.generate(next, len(tokens), maxTokens, rec)
	if err != nil {
		return nil, "", 0, err
	}
	if echo {
		text = prompt + text
	}
	promptTokens := len(tokens) - bos
	rec.lp.TextOffset = offsets(rec.lp.Tokens, promptTokens, prompt, echo)
	return rec.lp, text, promptTokens, nil
}

// recorder adds tokens to a response's logprobs.
type recorder struct {
	s   *server
	lp  *logprobs
	top int
}

// add records tok, scored by dist (the distribution it was drawn from; nil: none).
func (r *recorder) add(tok int, dist []float32) {
	r.lp.Tokens = append(r.lp.Tokens, r.s.model.TokenToPiece(tok))
	if dist == nil {
		r.lp.TokenLogprobs = append(r.lp.TokenLogprobs, nil)
		r.lp.TopLogprobs = append(r.lp.TopLogprobs, nil)
		return
	}
	v := logSoftmaxAt(dist, tok)
	r.lp.TokenLogprobs = append(r.lp.TokenLogprobs, &v)
	r.lp.TopLogprobs = append(r.lp.TopLogprobs, r.s.topOf(dist, r.top))
}

// decodePrompt runs the prompt's tokens through the model in batches, recording each
// (after the BOS) with the log-probability the tokens before it give it when echo is
// set; it returns the distribution of the token after the prompt.
func (s *server) decodePrompt(tokens []int, bos int, echo bool, rec *recorder) ([]float32, error) {
	var next []float32
	for start := 0; start < len(tokens); start += s.batch.Size() {
		end := min(start+s.batch.Size(), len(tokens))
		s.batch.Clear()
		for i := start; i < end; i++ {
			s.batch.Add(tokens[i], nil, i, echo || i == len(tokens)-1, 0)
		}
		if err := s.lc.Decode(s.batch); err != nil {
			return nil, err
		}
		for i := start; i < end; i++ {
			if i >= bos && echo {
				rec.add(tokens[i], next)
			}
			if echo || i == len(tokens)-1 {
				next = s.lc.GetLogitsIth(i - start)
			}
		}
	}
	return next, nil
}

// generate draws up to maxTokens greedily after a prompt of n tokens, from next (the
// distribution after it), recording each; it returns the generated text.
func (s *server) generate(next []float32, n, maxTokens int, rec *recorder) (string, error) {
	var out strings.Builder
	for i := 0; i < maxTokens; i++ {
		tok := argmax(next)
		if s.model.TokenIsEog(tok) {
			break
		}
		rec.add(tok, next)
		out.WriteString(s.model.TokenToPiece(tok))
		s.batch.Clear()
		s.batch.Add(tok, nil, n+i, true, 0)
		if err := s.lc.Decode(s.batch); err != nil {
			return "", err
		}
		next = s.lc.GetLogitsIth(0)
	}
	return out.String(), nil
}

// offsets gives each token's offset in the returned text in characters, as OpenAI's
// legacy API and vLLM count them (Python's str), not in bytes. SentencePiece adds a
// space before the first word that the prompt does not have; the offsets are shifted
// back by it. With echo, the first promptTokens pieces are the prompt's, and the
// returned text is the prompt followed by the generated pieces. A piece that starts
// inside a character (a byte-fallback piece) is at the character it is part of.
func offsets(pieces []string, promptTokens int, prompt string, echo bool) []int {
	out := make([]int, len(pieces))
	at := 0
	if echo {
		joined := strings.Join(pieces[:min(promptTokens, len(pieces))], "")
		if shift := len(joined) - len(prompt); shift > 0 && strings.HasPrefix(joined, strings.Repeat(" ", shift)) {
			at = -shift
		}
	} else {
		at = len(prompt)
	}
	text := prompt
	if !echo {
		text = ""
	}
	for i, p := range pieces {
		if i >= promptTokens || !echo {
			text += p
		}
		out[i] = max(at, 0)
		at += len(p)
	}
	if !echo {
		text = prompt + text
	}
	for i, b := range out {
		out[i] = completeChars(text[:min(b, len(text))])
	}
	return out
}

// completeChars counts the characters of s, leaving out a character its end cuts.
func completeChars(s string) int {
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if !utf8.FullRuneInString(s[i:]) {
				s = s[:i]
			}
			break
		}
	}
	return utf8.RuneCountInString(s)
}

func logSoftmaxAt(logits []float32, tok int) float64 {
	return float64(logits[tok]) - logSumExp(logits)
}

func logSumExp(logits []float32) float64 {
	hi := math.Inf(-1)
	for _, l := range logits {
		hi = math.Max(hi, float64(l))
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l) - hi)
	}
	return hi + math.Log(sum)
}

func (s *server) topOf(logits []float32, n int) map[string]float64 {
	if n <= 0 {
		return nil
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	lse := logSumExp(logits)
	out := make(map[string]float64, n)
	for _, i := range idx[:min(n, len(idx))] {
		out[s.model.TokenToPiece(i)] = float64(logits[i]) - lse
	}
	return out
}

func argmax(v []float32) int {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return best
}

func reply(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func fail(w http.ResponseWriter, code int, msg string) {
	reply(w, code, map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error"}})
}
