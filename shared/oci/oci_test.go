package oci_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
)

func files(t *testing.T) []oci.File {
	dir := t.TempDir()
	summary, samples := filepath.Join(dir, "results.json"), filepath.Join(dir, "samples.jsonl")
	if err := os.WriteFile(summary, []byte(`{"summary":{"scores":{"mmlu":0.5}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(samples, []byte("{\"task\":\"mmlu\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []oci.File{{Path: summary, MediaType: oci.MediaTypeSummary}, {Path: samples, MediaType: oci.MediaTypeSamples}}
}

// TestAStagedArtifactIsReadAndRetagged is the Kubernetes results path against a real
// registry with basic auth: a job pushes under a staging tag, job-watch reads the
// summary from it, artifact writes the run's manifest over the same layers.
func TestAStagedArtifactIsReadAndRetagged(t *testing.T) {
	ctx := context.Background()
	addr := testserver.Registry(t, "evalflow", "s3cret")
	dest, err := oci.Open(oci.Config{Registry: addr + "/evalflow/results", PlainHTTP: true, Username: "evalflow", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	staged, pushed, err := dest.Push(ctx, oci.Artifact{Tag: "r1-results", Files: files(t), Created: created})
	if err != nil || !pushed {
		t.Fatalf("push staged: %v (pushed %v)", err, pushed)
	}

	summary, err := dest.FetchLayer(ctx, "r1-results", oci.MediaTypeSummary)
	if err != nil || !bytes.Contains(summary, []byte(`"mmlu":0.5`)) {
		t.Fatalf("summary = %s, %v", summary, err)
	}
	if _, err := dest.FetchLayer(ctx, "r2-results", oci.MediaTypeSummary); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("a tag never pushed: %v, want ErrNotFound", err)
	}

	a := oci.Artifact{Tag: "r1", Annotations: map[string]string{oci.AnnotationRunID: "r1"}, Created: created}
	final, pushed, err := dest.PushStaged(ctx, a, "r1-results")
	if err != nil || !pushed {
		t.Fatalf("push from staging: %v (pushed %v)", err, pushed)
	}
	again, pushed, err := dest.PushStaged(ctx, a, "r1-results")
	if err != nil || pushed || again.Digest != final.Digest {
		t.Errorf("a redelivered push: %v, pushed %v, digest %s then %s", err, pushed, final.Digest, again.Digest)
	}
	if final.Digest == staged.Digest {
		t.Error("the run's manifest is the staged one: the run's annotations are missing")
	}
	samples, err := dest.FetchLayer(ctx, "r1", oci.MediaTypeSamples)
	if err != nil || string(samples) != "{\"task\":\"mmlu\"}\n" {
		t.Errorf("samples under the run's tag = %q, %v", samples, err)
	}
	if _, _, err := dest.PushStaged(ctx, oci.Artifact{Tag: "r3", Created: created}, "r3-results"); !errors.Is(err, oci.ErrNotFound) || !errors.Is(err, evalflow.ErrPermanent) {
		t.Errorf("nothing staged: %v, want ErrNotFound, a permanent error", err)
	}

	// The staging tag goes; the run's artifact, sharing its layers, stays.
	for range 2 {
		if err := dest.Delete(ctx, "r1-results"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dest.FetchLayer(ctx, "r1-results", oci.MediaTypeSummary); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("the staging tag after its deletion: %v", err)
	}
	if late, pushed, err := dest.PushStaged(ctx, a, "r1-results"); err != nil || pushed || late.Digest != final.Digest {
		t.Errorf("a late duplicate after the staging tag went: %v, pushed %v; want the run's artifact", err, pushed)
	}
	if b, err := dest.FetchLayer(ctx, "r1", oci.MediaTypeSamples); err != nil || len(b) == 0 {
		t.Errorf("the run's artifact after the staging tag's deletion: %v", err)
	}
}

func TestWrongCredentialsAreRefused(t *testing.T) {
	addr := testserver.Registry(t, "evalflow", "s3cret")
	dest, err := oci.Open(oci.Config{Registry: addr + "/evalflow/results", PlainHTTP: true, Username: "evalflow", Password: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = dest.Push(context.Background(), oci.Artifact{Tag: "r1-results", Files: files(t), Created: time.Now()})
	if !errors.Is(err, oci.ErrRefused) {
		t.Fatalf("err = %v, want the registry's refusal", err)
	}
}

// A read-only data directory (as ../shared is) published and pulled back unpacks as
// files their owner can write, with the same contents; published again, it
// has the same digest.
func TestAReadOnlyDirectoryIsPublishedAndPulledWritable(t *testing.T) {
	ctx := context.Background()
	addr := testserver.Registry(t, "", "")
	dest, err := oci.Open(oci.Config{Registry: addr + "/evalflow/datasets", PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "datasets")
	if err := os.MkdirAll(filepath.Join(src, "mmlu"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "mmlu", "test.jsonl"), []byte("{\"q\":1}\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(src, "mmlu"), src} {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Chmod(src, 0o755); os.Chmod(filepath.Join(src, "mmlu"), 0o755) })
	first, err := dest.PushDir(ctx, src, "v1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := dest.PushDir(ctx, src, "v1")
	if err != nil || again.Digest != first.Digest {
		t.Fatalf("published again: %+v, %v; want digest %s", again, err, first.Digest)
	}
	out := t.TempDir()
	if err := dest.Pull(ctx, first.Digest, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "datasets", "mmlu", "test.jsonl"))
	if err != nil || string(got) != "{\"q\":1}\n" {
		t.Fatalf("pulled file: %q, %v", got, err)
	}
	// Modes, not a write: root (the tests' user) writes anywhere; the runner's
	// non-root user in a pod did not.
	for _, p := range []string{"datasets", "datasets/mmlu", "datasets/mmlu/test.jsonl"} {
		fi, err := os.Stat(filepath.Join(out, p))
		if err != nil || fi.Mode().Perm()&0o200 == 0 {
			t.Errorf("%s pulled back is not writable by its owner: %v, %v", p, fi.Mode(), err)
		}
	}
}
