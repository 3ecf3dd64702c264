package engine

import (
	"fmt"
	"strings"
	"sync"

	"github.com/evalflow/evalflow/runner/task"
)

// failures counts samples that failed after retries; past the tolerated count they
// fail the run.
type failures struct {
	mu        sync.Mutex
	n         int
	tolerated int
	last      []string
}

// add records a failure and reports whether the run must stop.
func (f *failures) add(d task.Doc, err error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.last = append(f.last, fmt.Sprintf("%s/%d: %v", d.Task, d.Index, err))
	if len(f.last) > 3 {
		f.last = f.last[1:]
	}
	return f.n > f.tolerated
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *failures) Error() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%d samples failed after retries (%d tolerated by max_error_rate); last errors: %s",
		f.n, f.tolerated, strings.Join(f.last, "; "))
}
