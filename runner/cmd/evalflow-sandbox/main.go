// Command evalflow-sandbox is the sandbox pod's program: it runs a batch of a
// model's programs (sandbox.Batch, read from -batch) each as python3 with the batch's
// limits, and prints one sandbox.Line per program on stdout. The pod is the walls (no
// network, no service account token, a read-only root, not root, no capabilities,
// seccomp, CPU, memory and PID limits): it runs nowhere else.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/evalflow/evalflow/runner/sandbox"
)

func main() {
	batch := flag.String("batch", "/programs/"+sandbox.BatchFile, "the batch of programs (sandbox.Batch, JSON)")
	python := flag.String("python", "/usr/bin/python3", "the python3 that runs each program")
	flag.Parse()
	if err := run(*batch, *python); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-sandbox:", err)
		os.Exit(1)
	}
}

func run(path, python string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("the batch: %w", err)
	}
	var batch sandbox.Batch
	if err := json.Unmarshal(b, &batch); err != nil {
		return fmt.Errorf("the batch %s: %w", path, err)
	}
	if _, err := os.Stat(python); err != nil {
		return fmt.Errorf("python3: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// GOMAXPROCS is the pod's CPU limit: as many programs at once.
	return sandbox.RunBatch(ctx, sandbox.Bare(python, batch.Limits.Limits(), runtime.GOMAXPROCS(0)), batch, os.Stdout)
}
