// Package evalflow is the domain of evalflow: an evaluation run, its steps and the
// status transitions allowed between them, the request a caller submits, the events
// that chain the steps, and the job spec the runner reads.
//
// It imports only the standard library. Each dependency is wrapped by its own
// subpackage: runstore (Redis), seal (AES-GCM), eventsink (CloudEvents), localjob
// (the local process runtime), oci (oras-go).
package evalflow
