// Package oci pushes a run's results as one OCI artifact with oras-go: to a local OCI
// image layout by default, or to a registry (basic auth supported).
//
// A push is idempotent: the tag derives from the run id, the manifest is byte-for-byte
// repeatable (a fixed created annotation), and a tag that already resolves is not
// pushed again.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/content/memory"
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

// PushDir pushes directory dir (the benchmark data) as one artifact tagged tag, and
// returns it; jobs pull it by its digest (Pull).
func (d *Destination) PushDir(ctx context.Context, dir, tag string) (*evalflow.Artifact, error) {
	blob, tarDigest, err := packDir(dir)
	if err != nil {
		return nil, domainError(fmt.Errorf("oci: pack %s: %w", dir, err))
	}
	store := memory.New()
	layer := content.NewDescriptorFromBytes(MediaTypeData, blob)
	layer.Annotations = map[string]string{ocispec.AnnotationTitle: filepath.Base(dir),
		file.AnnotationUnpack: "true", file.AnnotationDigest: tarDigest.String()}
	if err := store.Push(ctx, layer, bytes.NewReader(blob)); err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	desc, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, ArtifactTypeData, oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer},
		ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: "1970-01-01T00:00:00Z"}})
	if err != nil {
		return nil, fmt.Errorf("oci: pack manifest for %s: %w", dir, err)
	}
	if err := store.Tag(ctx, desc, tag); err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	if _, err := oras.Copy(ctx, store, tag, d.Target, tag, oras.DefaultCopyOptions); err != nil {
		return nil, domainError(fmt.Errorf("oci: push %s to %s:%s: %w", dir, d.Name, tag, err))
	}
	out, _, err := d.result(tag, desc, true, nil)
	return out, err
}

// packDir is dir as a gzipped tar under its own name, and the tar's digest. Entries
// are in name order with fixed times, owner and modes (directories 0755, files
// 0644), so the same files give the same digest, and whoever unpacks them, any user,
// can write there (a read-only source directory stays readable, not read-only).
func packDir(dir string) ([]byte, digest.Digest, error) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	root := filepath.Base(dir)
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join(root, rel))
		h := &tar.Header{Name: name, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case e.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, name+"/", 0o755
			return tw.WriteHeader(h)
		case !e.Type().IsRegular():
			return fmt.Errorf("%s: not a regular file", path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return nil, "", err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz) // no name, no time: the same tar gives the same bytes
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), digest.FromBytes(tarBuf.Bytes()), nil
}

// Pull fetches the artifact ref (a tag, or a digest) into dir: a directory pushed by
// PushDir is unpacked there under its own name.
func (d *Destination) Pull(ctx context.Context, ref, dir string) error {
	store, err := file.New(dir)
	if err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	defer store.Close()
	if _, err := oras.Copy(ctx, d.Target, ref, store, ref, oras.DefaultCopyOptions); err != nil {
		return domainError(fmt.Errorf("oci: pull %s:%s: %w", d.Name, ref, err))
	}
	return nil
}

// maxManifest and maxLayer bound what is read from a registry into memory (a full
// MMLU run's samples.jsonl is some 40 MB).
const (
	maxManifest = 4 << 20
	maxLayer    = 256 << 20
)

// FetchLayer reads the layer of mediaType in the artifact tagged tag; an absent
// tag or layer is ErrNotFound.
func (d *Destination) FetchLayer(ctx context.Context, tag, mediaType string) ([]byte, error) {
	l, err := d.layer(ctx, tag, mediaType)
	if err != nil {
		return nil, err
	}
	b, err := content.FetchAll(ctx, d.Target, l)
	if err != nil {
		return nil, fmt.Errorf("oci: fetch %s of %s:%s: %w", mediaType, d.Name, tag, domainError(err))
	}
	return b, nil
}

// OpenLayer streams the layer of mediaType in the artifact tagged tag, for a reader
// that parses or copies as it reads: its digest and size are checked at its end,
// where a mismatch is the last Read's error.
func (d *Destination) OpenLayer(ctx context.Context, tag, mediaType string) (*Layer, error) {
	l, err := d.layer(ctx, tag, mediaType)
	if err != nil {
		return nil, err
	}
	rc, err := d.Target.Fetch(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("oci: fetch %s of %s:%s: %w", mediaType, d.Name, tag, domainError(err))
	}
	return &Layer{VerifyReader: content.NewVerifyReader(rc, l), Closer: rc, Size: l.Size}, nil
}

// Layer is an open layer: it checks what it read against its descriptor once it
// is all read.
type Layer struct {
	*content.VerifyReader
	io.Closer
	// Size is the layer's size in bytes, as its manifest gives it.
	Size int64
}

func (l *Layer) Read(p []byte) (int, error) {
	n, err := l.VerifyReader.Read(p)
	if err == io.EOF {
		if verr := l.Verify(); verr != nil {
			return n, fmt.Errorf("oci: layer: %w", verr)
		}
	}
	return n, err
}

// layer is the descriptor of the layer of mediaType in the artifact tagged tag.
func (d *Destination) layer(ctx context.Context, tag, mediaType string) (ocispec.Descriptor, error) {
	m, err := d.manifest(ctx, tag)
	if err != nil {
		return ocispec.Descriptor{}, domainError(err)
	}
	for _, l := range m.Layers {
		if l.MediaType != mediaType {
			continue
		}
		if l.Size > maxLayer {
			return ocispec.Descriptor{}, fmt.Errorf("oci: %s:%s: layer %s is %d bytes, more than %d", d.Name, tag, mediaType, l.Size, maxLayer)
		}
		return l, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("oci: %s:%s has no %s layer: %w", d.Name, tag, mediaType, ErrNotFound)
}

// resolve says whether tag resolves, and to what.
func (d *Destination) resolve(ctx context.Context, tag string) (ocispec.Descriptor, bool, error) {
	desc, err := d.Target.Resolve(ctx, tag)
	switch {
	case err == nil:
		return desc, true, nil
	case errors.Is(err, errdef.ErrNotFound):
		return ocispec.Descriptor{}, false, nil
	}
	return ocispec.Descriptor{}, false, fmt.Errorf("oci: resolve %s:%s: %w", d.Name, tag, err)
}

// manifest reads the manifest tag resolves to.
func (d *Destination) manifest(ctx context.Context, tag string) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	desc, err := d.Target.Resolve(ctx, tag)
	if err != nil {
		return m, fmt.Errorf("oci: resolve %s:%s: %w", d.Name, tag, err)
	}
	if desc.Size > maxManifest {
		return m, fmt.Errorf("oci: %s:%s: manifest of %d bytes", d.Name, tag, desc.Size)
	}
	b, err := content.FetchAll(ctx, d.Target, desc)
	if err != nil {
		return m, fmt.Errorf("oci: fetch manifest %s:%s: %w", d.Name, tag, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("oci: manifest %s:%s: %w", d.Name, tag, err)
	}
	return m, nil
}

// pack writes a's manifest over layers and tags it.
func (d *Destination) pack(ctx context.Context, a Artifact, layers []ocispec.Descriptor) (ocispec.Descriptor, error) {
	ann := map[string]string{ocispec.AnnotationCreated: a.Created.UTC().Format(time.RFC3339)}
	for k, v := range a.Annotations {
		ann[k] = v
	}
	// Two deliveries pushing the same blobs at once can make a registry say for a moment
	// that a blob it is committing is unknown: the manifest is pushed (and tagged)
	// again a little later, when it knows it.
	desc, err := backoff.Retry(ctx, func() (ocispec.Descriptor, error) {
		desc, err := oras.PackManifest(ctx, d.Target, oras.PackManifestVersion1_1, ArtifactType,
			oras.PackManifestOptions{Layers: layers, ManifestAnnotations: ann})
		if err != nil {
			err = fmt.Errorf("oci: pack manifest for %s: %w", a.Tag, err)
		} else if err = d.Target.Tag(ctx, desc, a.Tag); err != nil {
			err = fmt.Errorf("oci: tag %s:%s: %w", d.Name, a.Tag, err)
		}
		if err != nil && !blobUnknown(err) {
			return desc, backoff.Permanent(err)
		}
		return desc, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxTries(6))
	return desc, err
}

// pushFile streams a file into the target as a blob, unless it is there already.
func pushFile(ctx context.Context, dst oras.Target, f File) (ocispec.Descriptor, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("oci: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	size, err := io.Copy(h, fh)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("oci: hash %s: %w", f.Path, err)
	}
	desc := ocispec.Descriptor{
		MediaType:   f.MediaType,
		Digest:      digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)),
		Size:        size,
		Annotations: map[string]string{ocispec.AnnotationTitle: filepath.Base(f.Path)},
	}
	if ok, err := dst.Exists(ctx, desc); err == nil && ok {
		return desc, nil
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("oci: %w", err)
	}
	if err := dst.Push(ctx, desc, fh); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return ocispec.Descriptor{}, fmt.Errorf("oci: push %s: %w", filepath.Base(f.Path), err)
	}
	return desc, nil
}

// blobUnknown says whether the registry refused a manifest for a blob it does not know.
func blobUnknown(err error) bool {
	var resp *errcode.ErrorResponse
	if !errors.As(err, &resp) {
		return false
	}
	for _, e := range resp.Errors {
		if e.Code == errcode.ErrorCodeManifestBlobUnknown || e.Code == errcode.ErrorCodeBlobUnknown {
			return true
		}
	}
	return false
}
