//go:build evalflow_start

package main

import (
	start "github.com/evalflow/evalflow/functions/start"
	fhttp "knative.dev/func-go/http"
)

func function() fhttp.Handler { return start.New() }
