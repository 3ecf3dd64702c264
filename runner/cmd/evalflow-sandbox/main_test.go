package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/sandbox"
)

// The sandbox pod's program, given a batch (the test's own programs: a model's run
// only in the pod, see devkit/node), prints one line per program saying what became
// of it, each within the batch's limits, and ReadLines reads them back in order.
func TestABatchGivesALinePerProgram(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("skipped: /usr/bin/python3 is absent (make test installs Debian's python3)")
	}
	bin := testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-sandbox")
	batch := sandbox.Batch{Limits: sandbox.Of(sandbox.Limits{Wall: time.Second, CPU: time.Second, Memory: 256 << 20, Processes: 64, FileSize: 1 << 20}),
		Programs: []string{"assert 1 + 1 == 2\n", "assert 1 + 1 == 3, 'arithmetic'\n", "while True:\n    pass\n", "def f(:\n"}}
	b, _ := json.Marshal(batch)
	path := filepath.Join(t.TempDir(), "batch.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "-batch", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if n := strings.Count(stdout.String(), "\n"); n != 4 {
		t.Errorf("%d lines:\n%s", n, stdout.String())
	}
	got, err := sandbox.ReadLines(&stdout, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"passed", "failed: AssertionError: arithmetic", "timed out after 1s", "failed: SyntaxError"}
	for i, r := range got {
		if !strings.HasPrefix(r.Outcome, want[i]) || r.Passed != (i == 0) {
			t.Errorf("program %d: %+v; want %s", i, r, want[i])
		}
	}
	if _, err := sandbox.ReadLines(strings.NewReader(`{"i":0,"passed":true,"outcome":"passed"}`+"\n"), 2); err == nil || !strings.Contains(err.Error(), "no result for program 1 of 2") {
		t.Errorf("an output short of a program: %v", err)
	}
}
