//go:build evalflow_deploy

package main

import (
	deploy "github.com/evalflow/evalflow/functions/deploy"
	fhttp "knative.dev/func-go/http"
)

func function() fhttp.Handler { return deploy.New() }
