// Command evalflow-sandbox is the sandbox pod's program. As the pod's own process
// (-wait) it waits to be stopped; the runner then runs it in the pod again (an exec)
// with a batch of a model's programs (sandbox.Batch, on stdin with -batch -), and it
// runs each as python3 with the batch's limits, printing one sandbox.Line per program
// on stdout. The pod is the walls (no network, no service account token, a read-only
// root, not root, no capabilities, seccomp, CPU, memory and PID limits): it runs
// nowhere else.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/evalflow/evalflow/runner/sandbox"
)

func main() {
	batch := flag.String("batch", "-", "the batch of programs (sandbox.Batch, JSON): a file, or - for stdin")
	python := flag.String("python", "/usr/bin/python3", "the python3 that runs each program")
	wait := flag.Bool("wait", false, "wait to be stopped (the pod's own process), running nothing")
	flag.Parse()
	if *wait {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		<-ctx.Done()
		return
	}
	if err := run(*batch, *python); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-sandbox:", err)
		os.Exit(1)
	}
}

func run(path, python string) error {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
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
