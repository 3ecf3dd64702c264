// Command evalflow-image builds the image of a Go engine (the built-in runner) without
// a Docker engine, on evalflow's own minimal base, and pushes it:
//
//	CGO_ENABLED=0 go build -trimpath -o bin/image/evalflow-runner ./runner/cmd/evalflow-runner
//	evalflow-image -engine evalflow -binary bin/image/evalflow-runner -registry 127.0.0.1:5000/evalflow
//
// The image is named as the engine registry names it, under -registry. The Python
// engines' images (lm-evaluation-harness, OpenCompass) need pip and PyPI: they stay
// Dockerfiles (make images with a Docker engine).
package main

import (
	"flag"
	"fmt"
	"os"
	"path"
	"runtime"

	"github.com/evalflow/evalflow/devkit/images"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
	"github.com/evalflow/evalflow/shared/kube"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	engine := flag.String("engine", "evalflow", "the engine whose image to build (its registry entry names the image and command)")
	binary := flag.String("binary", "", "the engine's static binary")
	registry := flag.String("registry", "", "HOST[:PORT]/PREFIX the image is pushed under")
	base := flag.String("base", "", "push only evalflow's base image to this reference (HOST[:PORT]/REPO:TAG), e.g. for ko's KO_DEFAULTBASEIMAGE")
	python := flag.String("sandbox-python", "", "build the sandbox pod's image instead: -binary is evalflow-sandbox, this Debian's python3 unpacked (hack/install-sandbox-python.sh)")
	flag.Parse()
	var err error
	switch {
	case *base != "":
		err = pushBase(*base)
	case *python != "":
		err = pushSandbox(*binary, *python, *registry)
	default:
		err = run(*engine, *binary, *registry)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-image:", err)
		os.Exit(1)
	}
}

// pushBase pushes the base image, for this machine's platform.
func pushBase(ref string) error {
	img, err := images.Base("linux", runtime.GOARCH)
	if err != nil {
		return err
	}
	return push(img, ref)
}

// pushSandbox builds the sandbox pod's image and pushes it under registry, named as
// kube.SandboxImage names it.
func pushSandbox(binary, python, registry string) error {
	if binary == "" || registry == "" {
		return fmt.Errorf("need -binary (evalflow-sandbox) and -registry")
	}
	img, err := images.Build(images.Spec{Binary: binary, Path: evalflow.SandboxProgram, Root: python, OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		return err
	}
	return push(img, engines.Under(registry, kube.SandboxImage))
}

// push pushes img to ref and prints ref@digest.
func push(img v1.Image, ref string) error {
	digest, err := images.Push(img, ref)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", ref, digest)
	return nil
}

func run(engine, binary, registry string) error {
	e, ok := engines.Default().Get(engine)
	switch {
	case !ok || binary == "" || registry == "":
		return fmt.Errorf("need -engine (an engine of the registry), -binary and -registry")
	case e.Name != evalflow.DefaultEngine:
		return fmt.Errorf("engine %q's image holds a Python engine (pip, PyPI): build runner/images/%s/Dockerfile with a Docker engine", e.Name, path.Base(e.Image))
	}
	img, err := images.Build(images.Spec{Binary: binary, Path: e.Command[0], OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		return err
	}
	return push(img, e.PulledFrom(registry, nil).Image)
}
