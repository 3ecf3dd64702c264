// Package oci pushes a run's results as one OCI artifact with oras-go: to a local OCI
// image layout by default, or to a registry (basic auth supported).
//
// A push is idempotent: the tag derives from the run id, the manifest is byte-for-byte
// repeatable (a fixed created annotation), and a tag that already resolves is not
// pushed again.
package oci

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"

	evalflow "github.com/evalflow/evalflow/shared"
)

// Media types of evalflow's results artifact.
const (
	ArtifactType     = "application/vnd.evalflow.results.v1+json"
	MediaTypeSummary = "application/vnd.evalflow.results.summary.v1+json"
	MediaTypeSamples = "application/vnd.evalflow.results.samples.v1+jsonl"
)

// Annotation keys set on the manifest.
const (
	AnnotationRunID    = "dev.evalflow.run-id"
	AnnotationModel    = "dev.evalflow.model"
	AnnotationDatasets = "dev.evalflow.datasets"
)

// MediaTypeCheckpoint is a job's checkpoint (its finished samples, JSON lines).
const MediaTypeCheckpoint = "application/vnd.evalflow.checkpoint.v1+jsonl"

// The benchmark data as an artifact: one layer, the data directory as a gzipped tar.
const (
	ArtifactTypeData = "application/vnd.evalflow.datasets.v1"
	MediaTypeData    = "application/vnd.evalflow.datasets.v1.tar+gzip"
)

// ErrNotFound is a tag, layer or file that is not there: results never written or
// pushed. No retry brings them, so it is evalflow.ErrPermanent.
var ErrNotFound = evalflow.Permanent(errors.New("not found"))

// ErrRefused is a registry that refused the credentials (401, 403). Whether that can
// mend is the caller's to say: a job's credentials are fixed (adapter.Publish fails
// the job for good), the deployment's may be corrected (artifact redelivers).
var ErrRefused = errors.New("credentials refused")

// Results is the artifact of a run's results, the one layout every pusher uses:
// results.json and samples.jsonl from dir, tagged tag, annotated with the run, its
// model and its datasets, created at the run's creation (so a push is repeatable).
func Results(dir, tag, runID, model string, datasets []evalflow.DatasetSpec, created time.Time) Artifact {
	names := make([]string, len(datasets))
	for i, d := range datasets {
		names[i] = d.Name
	}
	return Artifact{
		Tag: tag,
		Files: []File{
			{Path: filepath.Join(dir, evalflow.ResultsFile), MediaType: MediaTypeSummary},
			{Path: filepath.Join(dir, evalflow.SamplesFile), MediaType: MediaTypeSamples},
		},
		Annotations: map[string]string{AnnotationRunID: runID, AnnotationModel: model,
			AnnotationDatasets: strings.Join(names, ",")},
		Created: created,
	}
}

// Config says where artifacts go. With Registry empty they go to the OCI layout at Layout.
type Config struct {
	Layout string `env:"EVALFLOW_OCI_LAYOUT"`
	// Registry is HOST[:PORT]/REPOSITORY, e.g. 127.0.0.1:5000/evalflow/results.
	Registry  string `env:"EVALFLOW_REGISTRY"`
	PlainHTTP bool   `env:"EVALFLOW_REGISTRY_PLAIN_HTTP, default=false"`
	Username  string `env:"EVALFLOW_REGISTRY_USERNAME"`
	Password  string `env:"EVALFLOW_REGISTRY_PASSWORD"`
}

// Destination is a place artifacts are pushed to.
type Destination struct {
	Target oras.Target
	// Name is the reference's name part: the repository, or oci-layout://DIR.
	Name      string
	plainHTTP bool
}

// Open returns the destination cfg names.
func Open(cfg Config) (*Destination, error) {
	if cfg.Registry == "" {
		if cfg.Layout == "" {
			return nil, errors.New("oci: neither EVALFLOW_REGISTRY nor EVALFLOW_OCI_LAYOUT is set")
		}
		store, err := oci.New(cfg.Layout)
		if err != nil {
			return nil, fmt.Errorf("oci: layout %s: %w", cfg.Layout, err)
		}
		return &Destination{Target: store, Name: "oci-layout://" + cfg.Layout}, nil
	}
	repo, err := remote.NewRepository(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("oci: registry %s: %w", cfg.Registry, err)
	}
	repo.PlainHTTP = cfg.PlainHTTP
	client := &auth.Client{Client: retry.DefaultClient, Cache: auth.NewCache()}
	if cfg.Username != "" {
		client.Credential = auth.StaticCredential(repo.Reference.Registry, auth.Credential{Username: cfg.Username, Password: cfg.Password})
	}
	repo.Client = client
	return &Destination{Target: repo, Name: cfg.Registry, plainHTTP: cfg.PlainHTTP}, nil
}

// PullCommand is the oras command line that fetches artifact a from d into dir.
func (d *Destination) PullCommand(a *evalflow.Artifact, dir string) string {
	if layout, ok := strings.CutPrefix(d.Name, "oci-layout://"); ok {
		return "oras pull --oci-layout " + layout + "@" + a.Digest + " -o " + dir
	}
	cmd := "oras pull " + d.Name + "@" + a.Digest + " -o " + dir
	if d.plainHTTP {
		cmd += " --plain-http"
	}
	return cmd
}

// File is one layer of the artifact.
type File struct {
	Path      string
	MediaType string
}

// Artifact describes what to push.
type Artifact struct {
	Tag         string
	Files       []File
	Annotations map[string]string
	// Created is recorded as org.opencontainers.image.created; a fixed value makes the
	// manifest, and so its digest, repeatable.
	Created time.Time
}

// Push pushes a unless its tag already resolves, and returns the artifact as users
// pull it and whether this call pushed it. A file that is not there is ErrNotFound;
// credentials the registry refuses are ErrRefused.
func (d *Destination) Push(ctx context.Context, a Artifact) (*evalflow.Artifact, bool, error) {
	if desc, found, err := d.resolve(ctx, a.Tag); err != nil || found {
		return d.result(a.Tag, desc, false, err)
	}
	layers := make([]ocispec.Descriptor, 0, len(a.Files))
	for _, f := range a.Files {
		desc, err := pushFile(ctx, d.Target, f)
		if err != nil {
			return nil, false, domainError(err)
		}
		layers = append(layers, desc)
	}
	desc, err := d.pack(ctx, a, layers)
	return d.result(a.Tag, desc, true, err)
}

// result is a push's answer: desc under tag as the domain describes it, and whether
// this call pushed it; or err as the domain's.
func (d *Destination) result(tag string, desc ocispec.Descriptor, pushed bool, err error) (*evalflow.Artifact, bool, error) {
	if err != nil {
		return nil, false, domainError(err)
	}
	return &evalflow.Artifact{Reference: d.Name + ":" + tag + "@" + desc.Digest.String(),
		Digest: desc.Digest.String(), MediaType: desc.MediaType}, pushed, nil
}

// domainError maps oras-go's and the registry's errors onto the domain's: not found
// is ErrNotFound (evalflow.ErrPermanent), refused credentials ErrRefused; anything
// else (a registry that does not answer) is left for a retry.
func domainError(err error) error {
	var resp *errcode.ErrorResponse
	switch {
	case errors.Is(err, errdef.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.As(err, &resp) && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

// PushStaged pushes a with the layers of the artifact tagged staged in the same
// place (pushed there by a job; a's Files are ignored), unless a's tag already
// resolves. No layer is uploaded again: only a new manifest is written.
func (d *Destination) PushStaged(ctx context.Context, a Artifact, staged string) (*evalflow.Artifact, bool, error) {
	if desc, found, err := d.resolve(ctx, a.Tag); err != nil || found {
		return d.result(a.Tag, desc, false, err)
	}
	m, err := d.manifest(ctx, staged)
	if errors.Is(err, errdef.ErrNotFound) {
		// A concurrent push may have written a's tag and deleted the staged one since.
		if desc, found, rerr := d.resolve(ctx, a.Tag); rerr == nil && found {
			return d.result(a.Tag, desc, false, nil)
		}
	}
	if err != nil {
		return nil, false, domainError(err)
	}
	desc, err := d.pack(ctx, a, m.Layers)
	return d.result(a.Tag, desc, true, err)
}

// Delete removes the manifest tag resolves to, and so the tag; the blobs stay, for
// the manifests that share them. A tag that does not resolve is not an error.
func (d *Destination) Delete(ctx context.Context, tag string) error {
	desc, found, err := d.resolve(ctx, tag)
	if err != nil || !found {
		return err
	}
	return d.delete(ctx, tag, desc)
}

func (d *Destination) delete(ctx context.Context, tag string, desc ocispec.Descriptor) error {
	deleter, ok := d.Target.(content.Deleter)
	if !ok {
		return fmt.Errorf("oci: %s cannot delete", d.Name)
	}
	if err := deleter.Delete(ctx, desc); err != nil && !errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("oci: delete %s:%s: %w", d.Name, tag, err)
	}
	return nil
}

// DropStaged removes the staged tag once final holds its results: it deletes the
// staged manifest, unless final is that very manifest (a job that packed its results
// as the final artifact would be, with the same annotations, made the same digest),
// which registries can delete only with every tag naming it, final's included.
func (d *Destination) DropStaged(ctx context.Context, staged string, final *evalflow.Artifact) error {
	desc, found, err := d.resolve(ctx, staged)
	if err != nil || !found || (final != nil && desc.Digest.String() == final.Digest) {
		return err
	}
	return d.delete(ctx, staged, desc)
}

// Replace pushes the file at path as the one layer of an artifact tagged tag,
// replacing what the tag named: a checkpoint, which changes as a job goes.
func (d *Destination) Replace(ctx context.Context, path, mediaType, tag string) error {
	layer, err := pushFile(ctx, d.Target, File{Path: path, MediaType: mediaType})
	if err != nil {
		return domainError(err)
	}
	_, err = d.pack(ctx, Artifact{Tag: tag, Created: time.Unix(0, 0)}, []ocispec.Descriptor{layer})
	return domainError(err)
}

// maxManifest and maxLayer bound what is read from a registry into memory (a full
// MMLU run's samples.jsonl is some 40 MB).
const (
	maxManifest = 4 << 20
	maxLayer    = 256 << 20
)
