package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cenkalti/backoff/v5"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Packing files into an artifact's layers, and pushing them.

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
