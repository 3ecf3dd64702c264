// Command evalflow-function is one of evalflow's functions as its container image runs
// it: the function, served by func-go as the main func's scaffolding generates
// (knative.dev/func-go/http), built alone by a build tag naming the step, so that each
// image holds its own function and nothing of the others:
//
//	CGO_ENABLED=0 go build -trimpath -tags evalflow_start -o bin/image/evalflow-start ./local/cmd/evalflow-function
//
// The tags are evalflow_start, evalflow_verify, evalflow_deploy, evalflow_jobwatch and
// evalflow_artifact (local/release builds each; Tags maps a step to its tag).
package main

import (
	"fmt"
	"os"

	fhttp "knative.dev/func-go/http"
)

func main() {
	if err := fhttp.Start(function()); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-function:", err)
		os.Exit(1)
	}
}
