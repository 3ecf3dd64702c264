// Command lm-eval-adapter runs EleutherAI's lm-evaluation-harness as an evalflow
// engine: it reads the job spec (/meta/job.json in a Job, --job PATH elsewhere), runs
// lm_eval against the endpoint with the API key in its environment, turns lm_eval's
// progress bars into progress reports, and writes lm_eval's results as evalflow's
// results.json and samples.jsonl. lm_eval is $LM_EVAL, or lm_eval on PATH.
package main

import (
	"github.com/evalflow/evalflow/runner/external"
	"github.com/evalflow/evalflow/runner/lmeval"
)

func main() { external.Main(lmeval.External()) }
