//go:build evalflow_artifact

package main

import (
	artifact "github.com/evalflow/evalflow/functions/artifact"
	fhttp "knative.dev/func-go/http"
)

func function() fhttp.Handler { return artifact.New() }
