//go:build evalflow_jobwatch

package main

import (
	jobwatch "github.com/evalflow/evalflow/functions/job-watch"
	fhttp "knative.dev/func-go/http"
)

func function() fhttp.Handler { return jobwatch.New() }
