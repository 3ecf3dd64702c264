package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/errdef"
)

// Reading artifacts back: pulled whole, or one layer.

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
