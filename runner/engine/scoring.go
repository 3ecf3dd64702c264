package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/sandbox"
	"github.com/evalflow/evalflow/runner/task"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/openai"
)

// Request is the chat request the engine sends for a generated sample: the
// benchmark's load generator sends exactly these bodies.
func (e *Engine) Request(d task.Doc) openai.ChatRequest {
	seed := e.Seed
	turns := d.Turns(e.Spec.Options.FewshotAsMultiturn())
	messages := make([]openai.Message, len(turns))
	for i, m := range turns {
		messages[i] = openai.Message{Role: m.Role, Content: m.Content}
	}
	return openai.ChatRequest{
		Model:     e.Spec.Model.Name,
		Messages:  messages,
		MaxTokens: e.maxTokens(d), Temperature: d.Temperature, TopP: d.TopP, Seed: &seed,
		Stop: d.Stop,
	}
}

// maxTokens bounds d's generated answer: the engine's bound, else the task's, else 32.
func (e *Engine) maxTokens(d task.Doc) int { return cmp.Or(e.MaxTokens, d.MaxTokens, 32) }

// score asks the endpoint for d's sample and scores it; or, for a task scored by
// running the code its responses make (HumanEval), returns those programs (one a
// repeat), for runPrograms to score the sample once the sandbox has run them.
func (e *Engine) score(ctx context.Context, d task.Doc) (results.Sample, []task.Program, error) {
	if e.Tokens != nil {
		// A request's tokens, estimated before it is sent: prompt bytes / 4 plus the
		// answer's bound.
		n := min(len(d.Prompt)/4+cmp.Or(e.MaxTokens, d.MaxTokens, 1)*max(1, len(d.Choices)), e.Tokens.Burst())
		if err := e.Tokens.WaitN(ctx, n); err != nil {
			return results.Sample{}, nil, err
		}
	}
	s := results.Sample{Sample: evalflow.Sample{Task: d.Task, Group: d.Group, DocID: d.Index, Prompt: d.Prompt, Target: d.Target, Metric: d.Metric}}
	switch {
	case d.ScoreContinuation != nil:
		ll, greedy, usage, err := e.continuation(ctx, d)
		if err != nil {
			return s, nil, err
		}
		s.Filters, s.Usage, s.Logprobs = d.ScoreContinuation(ll, greedy), evalflow.Usage(usage), []*float64{&ll}
	case d.Method == task.Logprobs || d.Method == task.Loglikelihood:
		lp, usage, err := e.choiceLogprobs(ctx, d)
		if err != nil {
			return s, nil, err
		}
		s.Filters, s.Usage = d.ScoreChoices(lp), evalflow.Usage(usage)
		s.Logprobs = make([]*float64, len(lp))
		for i := range lp {
			if !math.IsInf(lp[i], -1) {
				s.Logprobs[i] = &lp[i]
			}
		}
	case d.Program != nil:
		programs, err := e.programs(ctx, d, &s)
		return s, programs, err
	default:
		text, usage, err := e.generate(ctx, d)
		if err != nil {
			return s, nil, err
		}
		s.Response, s.Usage = task.Until(text, d.Stop), evalflow.Usage(usage)
		s.Filters = d.Score(s.Response)
	}
	s.Extracted, s.Correct = s.Filters[0].Extracted, s.Filters[0].Correct
	return s, nil, nil
}

// programs asks for d's repeats responses, one request each (the same request, as
// lm-eval repeats it), into s, and returns the program each makes.
func (e *Engine) programs(ctx context.Context, d task.Doc, s *results.Sample) ([]task.Program, error) {
	programs := make([]task.Program, max(1, d.Repeats))
	for i := range programs {
		text, usage, err := e.generate(ctx, d)
		if err != nil {
			return nil, err
		}
		text = task.Until(text, d.Stop)
		if i == 0 {
			s.Response = text
		}
		if len(programs) > 1 {
			s.Responses = append(s.Responses, text)
		}
		s.Usage.PromptTokens += usage.PromptTokens
		s.Usage.CompletionTokens += usage.CompletionTokens
		programs[i] = d.Program(text)
	}
	return programs, nil
}

// runPrograms scores s by what became of its programs in the sandbox, run together:
// pass@k for each of d's k; an error is the sandbox's, which leaves the sample to be
// asked again.
func (e *Engine) runPrograms(ctx context.Context, d task.Doc, s results.Sample, programs []task.Program) (results.Sample, error) {
	runs := make([]sandbox.Result, len(programs))
	errs := make([]error, len(programs))
	var wg sync.WaitGroup
	for i, p := range programs {
		wg.Go(func() { runs[i], errs[i] = e.Sandbox.Run(ctx, p.Code) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	passed, outcome, outcomes := 0, runs[0].Outcome, []string(nil)
	for _, r := range runs {
		if r.Passed {
			passed++
		}
	}
	if len(runs) > 1 {
		outcome = fmt.Sprintf("%d of %d passed", passed, len(runs))
		for _, r := range runs {
			outcomes = append(outcomes, r.Outcome)
		}
	}
	ks := d.PassAtK
	if len(ks) == 0 {
		ks = []int{1}
	}
	for _, k := range ks {
		f := task.Filtered{Filter: programs[0].Filter, Metric: fmt.Sprintf("pass@%d", k), Extracted: programs[0].Code,
			Correct: passed > 0, Outcome: outcome, Outcomes: outcomes}
		if len(runs) > 1 {
			v := task.PassAtK(len(runs), passed, k)
			f.Value = &v
		}
		s.Filters = append(s.Filters, f)
	}
	s.Extracted, s.Correct = s.Filters[0].Extracted, s.Filters[0].Correct
	return s, nil
}

// generate asks for d's answer as the run's generation API delivers prompts: one chat
// user message (chat, the default), or the raw prompt to /completions (completions,
// as lm-eval's local-completions does).
func (e *Engine) generate(ctx context.Context, d task.Doc) (string, openai.Usage, error) {
	if e.Spec.Options.GenerationAPI == evalflow.GenerationCompletions {
		seed := e.Seed
		resp, err := e.Client.Complete(ctx, openai.CompletionRequest{Model: e.Spec.Model.Name, Prompt: d.Prompt,
			MaxTokens: e.maxTokens(d), Temperature: d.Temperature, TopP: d.TopP, Seed: &seed, Stop: d.Stop})
		if err != nil {
			return "", openai.Usage{}, err
		}
		return resp.Text(), resp.Usage, nil
	}
	resp, err := e.Client.Chat(ctx, e.Request(d))
	if err != nil {
		return "", openai.Usage{}, err
	}
	return resp.Text(), resp.Usage, nil
}

// continuation is the log-likelihood of d's one choice after its prompt, and whether
// it is the greedy continuation (echo with the top log-probability of each token).
func (e *Engine) continuation(ctx context.Context, d task.Doc) (float64, bool, openai.Usage, error) {
	if len(d.Choices) != 1 {
		return 0, false, openai.Usage{}, fmt.Errorf("engine: %s/%d: a loglikelihood document has one continuation, not %d", d.Task, d.Index, len(d.Choices))
	}
	resp, err := e.Client.Complete(ctx, openai.CompletionRequest{Model: e.Spec.Model.Name,
		Prompt: d.Prompt + d.Choices[0], MaxTokens: 1, Echo: true, Logprobs: 1})
	if err != nil {
		return 0, false, openai.Usage{}, err
	}
	ll, greedy, err := resp.Continuation(d.Prompt, d.Choices[0])
	return ll, greedy, openai.Usage{PromptTokens: resp.Usage.PromptTokens}, err
}

// choiceLogprobs scores each of d's choices: from the next token's top_logprobs
// (Logprobs; a choice not among them is -Inf), or as the log-likelihood of the prompt
// followed by the choice (Loglikelihood, one echo request per choice).
func (e *Engine) choiceLogprobs(ctx context.Context, d task.Doc) ([]float64, openai.Usage, error) {
	lp := make([]float64, len(d.Choices))
	var usage openai.Usage
	if d.Method == task.Logprobs {
		seed := e.Seed
		resp, err := e.Client.Chat(ctx, openai.ChatRequest{Model: e.Spec.Model.Name,
			Messages:  []openai.Message{{Role: "user", Content: d.Prompt}},
			MaxTokens: 2, Temperature: 0, Seed: &seed, Logprobs: true, TopLogprobs: 20})
		if err != nil {
			return nil, usage, err
		}
		steps := resp.Steps()
		if len(steps) == 0 || steps[0].TopLogprobs == nil {
			return nil, usage, errNoTopLogprobs
		}
		for i, c := range d.Choices {
			lp[i] = nextTokenLogprob(steps, strings.TrimSpace(c))
		}
		return lp, resp.Usage, nil
	}
	for i, c := range d.Choices {
		context := d.Prompt
		if d.Contexts != nil {
			context = d.Contexts[i]
		}
		resp, err := e.Client.Complete(ctx, openai.CompletionRequest{Model: e.Spec.Model.Name,
			Prompt: context + c, MaxTokens: 1, Echo: true, Logprobs: 1})
		if err != nil {
			return nil, usage, err
		}
		if lp[i], err = resp.ContinuationLogprob(context, c); err != nil {
			return nil, usage, err
		}
		usage.PromptTokens += resp.Usage.PromptTokens
	}
	return lp, usage, nil
}

// nextTokenLogprob is the log-probability that the answer comes next: as the first
// token (" A" or "A"), or, where the model first generates whitespace, as the token
// after it (" " then "A", as tokenizers that split a space from a letter write " A").
// The two are different ways to write the answer, so their probabilities add up.
// -Inf: the answer is not among the top tokens.
func nextTokenLogprob(steps []openai.Step, answer string) float64 {
	best := func(top []openai.TokenLogprob) float64 {
		lp := math.Inf(-1)
		for _, t := range top {
			if strings.TrimSpace(t.Token) == answer && t.Logprob > lp {
				lp = t.Logprob
			}
		}
		return lp
	}
	lp := best(steps[0].TopLogprobs)
	if len(steps) > 1 && steps[0].Token != "" && strings.TrimSpace(steps[0].Token) == "" {
		if after := best(steps[1].TopLogprobs); !math.IsInf(after, -1) {
			lp = logAddExp(lp, steps[0].Logprob+after)
		}
	}
	return lp
}

// logAddExp is log(exp(a) + exp(b)), without overflow.
func logAddExp(a, b float64) float64 {
	if math.IsInf(a, -1) {
		return b
	}
	if math.IsInf(b, -1) {
		return a
	}
	hi, lo := max(a, b), min(a, b)
	return hi + math.Log1p(math.Exp(lo-hi))
}

var errNoTopLogprobs = errors.New("the endpoint returned no top_logprobs on chat completions")

// ErrUnsupported says the endpoint cannot do what the job asks (a scoring method):
// running the job again cannot help.
var ErrUnsupported = evalflow.Permanent(errors.New("unsupported by the endpoint"))

// Probe asks the endpoint once for each method docs need (and, for generated docs,
// once through the run's generation API), so that an endpoint that cannot do one is
// refused with a clear error before any sample is spent.
func (e *Engine) Probe(ctx context.Context, docs []task.Doc) error {
	probed := map[string]bool{}
	for _, d := range docs {
		if probed[d.Method] {
			continue
		}
		probed[d.Method] = true
		probe := d
		probe.Prompt, probe.MaxTokens = "Answer:", 1
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := e.probe(pctx, probe)
		cancel()
		switch {
		case err != nil && d.Method == task.Generate:
			return fmt.Errorf("engine: %s cannot be generated through options.generation_api %q: %w; choose %q: %w",
				d.Task, e.Spec.Options.GenerationAPI, err, evalflow.GenerationChat, ErrUnsupported)
		case err != nil:
			return fmt.Errorf("engine: %s cannot be scored with method %q: %w; choose another method: %w", d.Task, d.Method, err, ErrUnsupported)
		}
	}
	return nil
}

// probeWithin is Probe, failing as a stall (the endpoint answered nothing usable) if
// it takes limit.
func (e *Engine) probeWithin(ctx context.Context, docs []task.Doc, limit time.Duration) error {
	ctx, cancel := context.WithTimeoutCause(ctx, limit, evalflow.Permanent(
		fmt.Errorf("the endpoint answered nothing usable to a first request for %s (options.no_progress_seconds: %d)", limit, int(limit.Seconds()))))
	defer cancel()
	err := e.Probe(ctx, docs)
	if cause := context.Cause(ctx); err != nil && cause != nil && errors.Is(cause, evalflow.ErrPermanent) {
		return fmt.Errorf("engine: %w", cause)
	}
	return err
}

// probe asks for doc d once, as its method does.
func (e *Engine) probe(ctx context.Context, d task.Doc) error {
	switch {
	case d.ScoreContinuation != nil:
		_, _, _, err := e.continuation(ctx, d)
		return err
	case d.Method == task.Logprobs || d.Method == task.Loglikelihood:
		_, _, err := e.choiceLogprobs(ctx, d)
		return err
	case d.Method == task.Generate:
		if e.Spec.Options.GenerationAPI == evalflow.GenerationCompletions {
			_, _, err := e.generate(ctx, d)
			return err
		}
	}
	return nil // every OpenAI-compatible endpoint chats
}
