//go:build evalflow_verify

package main

import (
	verify "github.com/evalflow/evalflow/functions/verify"
	fhttp "knative.dev/func-go/http"
)

func function() fhttp.Handler { return verify.New() }
