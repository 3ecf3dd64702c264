// Package evalflow is the domain of evalflow: an evaluation run, its steps and the
// status transitions allowed between them, the request a caller submits and its one
// validation, the events that chain the steps, the job spec the runner reads, and
// ErrPermanent, the one way to say "this can never succeed".
//
// It imports only the standard library. Each dependency is wrapped by its own
// subpackage, which maps its library's errors onto the domain's: runstore (Redis), seal
// (AES-GCM), cloudevent (CloudEvents), kube (client-go), oci (oras-go), openai (an
// OpenAI-compatible endpoint), engines (the engine registry, JSON Schema). pipeline is
// what every step uses (and Env.Settle, its one fail-or-retry rule). What only local
// mode and the tests use lives in modules of its own: localjob (the local job runtime)
// and devkit (the real servers local mode and the tests start).
package evalflow
