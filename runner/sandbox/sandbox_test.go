package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/sandbox"
)

func local(t *testing.T) *sandbox.Local {
	t.Helper()
	s, err := sandbox.NewLocal(sandbox.DefaultLimits, 2)
	if err != nil {
		if os.Getenv("EVALFLOW_REQUIRE_SERVERS") != "" {
			t.Fatal(err)
		}
		t.Skipf("skipped: %v (make test installs bubblewrap and python3)", err)
	}
	return s
}

// A program that does what it should passes; one that does not fails, saying why.
func TestAProgramPassesOrFailsSayingWhy(t *testing.T) {
	s := local(t)
	for program, want := range map[string]string{
		"def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n": "passed",
		"def add(a, b):\n    return a * b\nassert add(2, 3) == 5\n": "failed: AssertionError",
		"def add(a, b)\n": "failed: SyntaxError: expected ':'",
	} {
		if r, err := s.Run(context.Background(), program); err != nil || r.Outcome != want || r.Passed != (want == "passed") {
			t.Errorf("%q: %+v %v; want %s", program, r, err, want)
		}
	}
}

// Hostile programs fail their own sample, saying why, and change nothing outside
// the sandbox: a loop without end, a fork bomb, an allocation without end, a
// connection to a listener on this machine, reading evalflow's environment, writing
// outside its directory.
func TestHostileProgramsFailAndChangeNothingOutside(t *testing.T) {
	s := local(t)
	listener, connections := testserver.CountConnections(t, "127.0.0.1")
	outside := filepath.Join(t.TempDir(), "pwned")
	t.Setenv("EVALFLOW_SECRET", "do-not-leak")
	cases := map[string]struct{ program, want string }{
		"loops":     {"while True:\n    pass\n", "timed out"},
		"forks":     {"import os\nwhile True:\n    os.fork()\n", "failed: BlockingIOError"},
		"allocates": {"x = []\nwhile True:\n    x.append(' ' * 10**7)\n", "failed: MemoryError"},
		"connects":  {fmt.Sprintf("import socket\nsocket.create_connection(('127.0.0.1', %d), timeout=1)\n", listener.Port), "failed: ConnectionRefusedError"},
		"reads env": {"import os\nassert os.environ.get('EVALFLOW_SECRET') == 'do-not-leak', dict(os.environ)\n", "failed: AssertionError"},
		"writes":    {fmt.Sprintf("open(%q, 'w').write('x')\n", outside), "failed: FileNotFoundError"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			began := time.Now()
			r, err := s.Run(context.Background(), c.program)
			if err != nil || r.Passed || !strings.HasPrefix(r.Outcome, c.want) {
				t.Errorf("%+v %v; want %s", r, err, c.want)
			}
			if d := time.Since(began); d > 10*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
	if _, err := os.Stat(outside); !os.IsNotExist(err) {
		t.Errorf("a program wrote %s outside its sandbox", outside)
	}
	if n := connections.Load(); n != 0 {
		t.Errorf("%d connections reached a listener outside the sandbox", n)
	}
}
