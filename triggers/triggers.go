// Package triggers holds the Triggers that chain evalflow's steps on its broker,
// embedded so that the evalflow binary's local broker routes by them wherever it runs.
// kubectl and make deploy apply the files themselves.
package triggers

import "embed"

// FS is this directory's Trigger manifests.
//
//go:embed *.yaml
var FS embed.FS
