//go:build !evalflow_start && !evalflow_verify && !evalflow_deploy && !evalflow_jobwatch && !evalflow_artifact

package main

import (
	"fmt"
	"os"

	fhttp "knative.dev/func-go/http"
)

// function: built without a step's tag, the command has no function to serve.
func function() fhttp.Handler {
	fmt.Fprintln(os.Stderr, "evalflow-function: built without a function's tag (-tags evalflow_start, ...)")
	os.Exit(2)
	return nil
}
