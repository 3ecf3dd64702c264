// Package images builds container images without a Docker engine, with
// go-containerregistry, on a minimal base evalflow builds itself, and pushes them.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonRootUID is the user and group the images run as (kube.RunnerUID).
const NonRootUID = 65532

// CABundle is where the base layer's CA certificates come from: Debian's
// ca-certificates, which the image's TLS clients (the registry, the endpoint) trust.
const CABundle = "/etc/ssl/certs/ca-certificates.crt"

// Spec says what image to build: a static binary on evalflow's minimal base, run as
// its entrypoint by the non-root user.
type Spec struct {
	// Binary is the static (CGO_ENABLED=0) program's path on this machine; Path is
	// where it goes in the image, also the entrypoint.
	Binary string
	Path   string
	// Platform is the binary's, e.g. linux/amd64.
	OS, Architecture string
	// Root, when set, is a directory whose tree (files, directories, symbolic links,
	// owned by root) is a layer under the binary's: the sandbox's Debian python3
	// (hack/install-sandbox-python.sh).
	Root string
	// Env adds NAME=VALUE settings to the image's environment.
	Env []string
}

// Build makes the image without a Docker engine: the base (Base), the binary's
// layer, and a config that runs it as nonroot. Layers carry fixed times, so the same
// inputs give the same digest.
func Build(s Spec) (v1.Image, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("images: binary: %w", err)
	}
	img, err := Base(s.OS, s.Architecture)
	if err != nil {
		return nil, err
	}
	if s.Root != "" {
		files, err := tree(s.Root)
		if err != nil {
			return nil, err
		}
		if img, err = appendLayer(img, files); err != nil {
			return nil, err
		}
	}
	if img, err = appendLayer(img, []file{{name: s.Path[1:], mode: 0o755, body: bin}}); err != nil {
		return nil, err
	}
	return configure(img, func(c *v1.Config) { c.Entrypoint = []string{s.Path}; c.Env = append(c.Env, s.Env...) })
}

// Base is evalflow's minimal base image for a platform: one layer the project builds
// (users root and nonroot, CA certificates, /tmp), run as nonroot. ko builds on it
// too (KO_DEFAULTBASEIMAGE), for images such as Knative's.
func Base(goos, arch string) (v1.Image, error) {
	ca, err := os.ReadFile(CABundle)
	if err != nil {
		return nil, fmt.Errorf("images: CA certificates (Debian's ca-certificates): %w", err)
	}
	base, err := layer([]file{
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/passwd", mode: 0o644, body: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRootUID, NonRootUID))},
		{name: "etc/group", mode: 0o644, body: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRootUID))},
		{name: "etc/ssl/", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: ca},
		{name: "home/", dir: true, mode: 0o755},
		{name: "home/nonroot/", dir: true, mode: 0o700, uid: NonRootUID},
		{name: "tmp/", dir: true, mode: 0o1777},
	})
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if img, err = mutate.Append(img, mutate.Addendum{Layer: base, MediaType: types.OCILayer}); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	return configure(img, func(c *v1.Config) {}, func(f *v1.ConfigFile) { f.OS, f.Architecture = goos, arch })
}

// configure sets img's run config: the nonroot user, PATH and the CA bundle, and what
// set and the platform functions add.
func configure(img v1.Image, set func(*v1.Config), platform ...func(*v1.ConfigFile)) (v1.Image, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	cfg = cfg.DeepCopy()
	for _, p := range platform {
		p(cfg)
	}
	cfg.Config.User = fmt.Sprintf("%d:%d", NonRootUID, NonRootUID)
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=" + CABundle}
	set(&cfg.Config)
	return mutate.ConfigFile(img, cfg)
}

// Push writes img to ref (HOST[:PORT]/REPOSITORY:TAG); a loopback registry is spoken
// to in plain HTTP.
func Push(img v1.Image, ref string) (v1.Hash, error) {
	return PushTo(context.Background(), img, ref, true)
}

// PushTo writes img to ref (HOST[:PORT]/REPOSITORY:TAG), over plain HTTP when
// plainHTTP, else over TLS with the credentials this machine's Docker config holds for
// the registry (docker login), if any.
func PushTo(ctx context.Context, img v1.Image, ref string, plainHTTP bool) (v1.Hash, error) {
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("images: %s: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return v1.Hash{}, fmt.Errorf("images: push %s: %w", ref, err)
	}
	return img.Digest()
}

// file is an entry of a layer.
type file struct {
	name string
	dir  bool
	link string // a symbolic link's target
	mode int64
	uid  int
	body []byte
}

// appendLayer is img with a layer of files on top.
func appendLayer(img v1.Image, files []file) (v1.Image, error) {
	l, err := layer(files)
	if err != nil {
		return nil, err
	}
	if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer}); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	return img, nil
}

// tree is the entries of the directory root, in lexical order, owned by root.
func tree(root string) ([]file, error) {
	var files []file
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := file{name: filepath.ToSlash(rel), mode: int64(info.Mode().Perm())}
		switch {
		case d.IsDir():
			f.name, f.dir = f.name+"/", true
		case info.Mode()&fs.ModeSymlink != 0:
			if f.link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if f.body, err = os.ReadFile(p); err != nil {
				return err
			}
		default:
			return nil // no devices, sockets or pipes in an image
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("images: the tree %s: %w", root, err)
	}
	return files, nil
}

// epoch is every entry's time: a layer's digest depends on its content only.
var epoch = time.Unix(0, 0)

func layer(files []file) (v1.Layer, error) {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: epoch, Typeflag: tar.TypeReg, Size: int64(len(f.body))}
		switch {
		case f.dir:
			h.Typeflag, h.Size = tar.TypeDir, 0
		case f.link != "":
			h.Typeflag, h.Size, h.Linkname = tar.TypeSymlink, 0, f.link
		}
		if err := w.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("images: layer: %w", err)
		}
		if _, err := w.Write(f.body); err != nil {
			return nil, fmt.Errorf("images: layer: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("images: layer: %w", err)
	}
	raw := b.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// Program builds the image of a dynamically linked program of this machine (a
// Debian package's, such as redis-server): the program at path, and the shared
// libraries ldd says it loads at the paths it says, on the base, run as nonroot
// with args after it.
func Program(program, path string, args ...string) (v1.Image, error) {
	body, err := os.ReadFile(program)
	if err != nil {
		return nil, fmt.Errorf("images: program: %w", err)
	}
	files := []file{{name: path[1:], mode: 0o755, body: body}}
	out, err := exec.Command("ldd", program).Output()
	if err != nil {
		return nil, fmt.Errorf("images: ldd %s: %w", program, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
		f := strings.Fields(line)
		lib := ""
		switch {
		case len(f) >= 3 && f[1] == "=>":
			lib = f[2]
		case len(f) == 2 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		}
		if lib == "" {
			continue
		}
		body, err := os.ReadFile(lib)
		if err != nil {
			return nil, fmt.Errorf("images: library of %s: %w", program, err)
		}
		files = append(files, file{name: lib[1:], mode: 0o755, body: body})
	}
	img, err := Base(runtime.GOOS, runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	if img, err = appendLayer(img, files); err != nil {
		return nil, err
	}
	return configure(img, func(c *v1.Config) { c.Entrypoint = []string{path}; c.Cmd = args })
}
