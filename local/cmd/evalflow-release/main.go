// Command evalflow-release builds an evalflow release (local/release; make release
// runs it): every image evalflow runs, pushed under -registry, and the manifest that
// installs it, every image by digest, written to -out:
//
//	evalflow-release -registry HOST[:PORT]/PREFIX -sandbox-python DIR [-out dist/evalflow.yaml]
//
// Install it with evalflow install -f dist/evalflow.yaml (docs/install.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/evalflow/evalflow/local/release"
)

func main() {
	var cfg release.Config
	out := flag.String("out", "dist/evalflow.yaml", "where the manifest goes")
	cfg.Flags(flag.CommandLine)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, *out); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-release:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg release.Config, out string) error {
	if cfg.Registry == "" {
		return fmt.Errorf("-registry is required")
	}
	cfg.Log = os.Stderr
	rel, err := release.Build(ctx, cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, rel.Manifest, 0o644); err != nil {
		return err
	}
	names := make([]string, 0, len(rel.Images))
	for n := range rel.Images {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Println(rel.Images[n])
	}
	fmt.Fprintf(os.Stderr, "release: %s; install it: evalflow install -f %s\n", out, out)
	return nil
}
