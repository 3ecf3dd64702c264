// Command opencompass-adapter runs OpenCompass as an evalflow engine: it reads the job
// spec (/meta/job.json in a Job, --job PATH elsewhere), writes a model config for the
// endpoint, runs opencompass with the API key in its environment, counts finished
// datasets as progress, and writes OpenCompass's results as evalflow's results.json
// and samples.jsonl. opencompass is $OPENCOMPASS, or opencompass on PATH.
package main

import (
	"github.com/evalflow/evalflow/runner/external"
	"github.com/evalflow/evalflow/runner/opencompass"
)

func main() { external.Main(opencompass.External()) }
