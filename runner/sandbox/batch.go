package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Batch is programs a sandbox pod runs, and their limits: what evalflow-sandbox
// reads.
type Batch struct {
	Limits   BatchLimits `json:"limits"`
	Programs []string    `json:"programs"`
}

// BatchLimits are Limits as a batch carries them.
type BatchLimits struct {
	WallMS    int64 `json:"wall_ms"`
	CPUMS     int64 `json:"cpu_ms"`
	Memory    int64 `json:"memory"`
	Processes int   `json:"processes"`
	FileSize  int64 `json:"file_size"`
}

// Of is l as a batch carries it.
func Of(l Limits) BatchLimits {
	return BatchLimits{WallMS: l.Wall.Milliseconds(), CPUMS: l.CPU.Milliseconds(), Memory: l.Memory, Processes: l.Processes, FileSize: l.FileSize}
}

// Limits are the batch's limits.
func (b BatchLimits) Limits() Limits {
	return Limits{Wall: time.Duration(b.WallMS) * time.Millisecond, CPU: time.Duration(b.CPUMS) * time.Millisecond,
		Memory: b.Memory, Processes: b.Processes, FileSize: b.FileSize}
}

// Line is what became of the batch's program I: one JSON line of the pod's output.
// Error is the sandbox's own failure to run it.
type Line struct {
	I       int    `json:"i"`
	Passed  bool   `json:"passed"`
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
}

// RunBatch runs b's programs with s, writing a Line for each to w as each ends.
func RunBatch(ctx context.Context, s *Local, b Batch, w io.Writer) error {
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	var wg sync.WaitGroup
	var werr error
	for i, p := range b.Programs {
		wg.Go(func() {
			r, err := s.Run(ctx, p)
			l := Line{I: i, Passed: r.Passed, Outcome: r.Outcome}
			if err != nil {
				l.Error = err.Error()
			}
			mu.Lock()
			defer mu.Unlock()
			if err := enc.Encode(l); err != nil && werr == nil {
				werr = err
			}
		})
	}
	wg.Wait()
	return werr
}

// ReadLines reads a pod's output: the Result of each of n programs, in the batch's
// order; an error names a program the output does not account for.
func ReadLines(r io.Reader, n int) ([]Result, error) {
	out, seen := make([]Result, n), make([]bool, n)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.I < 0 || l.I >= n {
			return nil, fmt.Errorf("sandbox: a line of the sandbox's output is not a program's result: %.200q", sc.Text())
		}
		if l.Error != "" {
			return nil, fmt.Errorf("sandbox: program %d of %d did not run: %s", l.I, n, l.Error)
		}
		out[l.I], seen[l.I] = Result{Passed: l.Passed, Outcome: l.Outcome}, true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sandbox: reading the sandbox's output: %w", err)
	}
	for i, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("sandbox: the sandbox's output has no result for program %d of %d", i, n)
		}
	}
	return out, nil
}
