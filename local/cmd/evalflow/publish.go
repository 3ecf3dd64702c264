package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/evalflow/evalflow/shared/oci"
)

// publishData pushes the benchmark data as an OCI artifact and prints its reference
// by digest: the EVALFLOW_DATA_ARTIFACT that Kubernetes Jobs pull their data from.
func publishData(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("publish-data", flag.ExitOnError)
	data := fs.String("data", "../shared/datasets", "the data directory")
	registry := fs.String("registry", "", "HOST[:PORT]/REPOSITORY to push to (the password comes from EVALFLOW_REGISTRY_PASSWORD)")
	username := fs.String("username", "", "registry user")
	plainHTTP := fs.Bool("plain-http", false, "speak plain HTTP to the registry")
	tag := fs.String("tag", "datasets", "the tag")
	_ = fs.Parse(args)
	if *registry == "" {
		return fmt.Errorf("publish-data: -registry is required")
	}
	dest, err := oci.Open(oci.Config{Registry: *registry, PlainHTTP: *plainHTTP, Username: *username, Password: os.Getenv("EVALFLOW_REGISTRY_PASSWORD")})
	if err != nil {
		return err
	}
	a, err := dest.PushDir(ctx, strings.TrimRight(*data, "/"), *tag)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", *registry, a.Digest)
	return nil
}
