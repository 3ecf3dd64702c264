package engine

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/task"
)

// CheckpointFile holds finished samples in completion order while a job runs.
const CheckpointFile = "checkpoint.jsonl"

// checkpoint is the file of finished samples: read when a job (re)starts, so that no
// sample is asked twice, and appended to as samples finish.
type checkpoint struct {
	done map[string]results.Sample
	f    *os.File
	w    *bufio.Writer
	// dirty says the file has writes not yet synced to disk; syncer syncs them every
	// syncEvery, off the path that counts samples, until stop.
	dirty atomic.Bool
	stop  chan struct{}
	ended chan struct{}
}

// openCheckpoint reads dir's checkpoint, drops a last line cut short by a crash (so
// that what is appended starts clean), and opens it for appending.
func openCheckpoint(dir string) (*checkpoint, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("engine: output dir: %w", err)
	}
	path := filepath.Join(dir, CheckpointFile)
	done, good, err := readCheckpoint(path)
	if err != nil {
		return nil, err
	}
	if err := os.Truncate(path, good); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("engine: checkpoint: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("engine: checkpoint: %w", err)
	}
	c := &checkpoint{done: done, f: f, w: bufio.NewWriter(f), stop: make(chan struct{}), ended: make(chan struct{})}
	go c.syncer()
	return c, nil
}

// syncer syncs the file to disk every syncEvery while it has unsynced writes: a
// machine's crash loses no more than that, and the collector never waits on the disk.
func (c *checkpoint) syncer() {
	defer close(c.ended)
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if c.dirty.Swap(false) {
				_ = c.f.Sync() // a failed sync is retried by the next write's; the write itself stands
			}
		}
	}
}

// todo are the docs not done yet.
func (c *checkpoint) todo(docs []task.Doc) []task.Doc {
	var out []task.Doc
	for _, d := range docs {
		if _, ok := c.done[results.Key(d.Task, d.Index)]; !ok {
			out = append(out, d)
		}
	}
	return out
}

// add records a finished sample (buffered: flush before counting it done).
func (c *checkpoint) add(s results.Sample) error {
	c.done[s.Key()] = s
	line, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("engine: checkpoint: sample %s: %w", s.Key(), err)
	}
	c.w.Write(append(line, '\n'))
	return nil
}

// flush writes what add buffered to the file, where a kill of the runner cannot lose
// it; the syncer syncs it to disk within syncEvery.
func (c *checkpoint) flush() error {
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("engine: checkpoint: %w", err)
	}
	c.dirty.Store(true)
	return nil
}

// syncEvery is how often the checkpoint is synced to disk while samples come.
const syncEvery = 50 * time.Millisecond

// sync writes what is buffered and syncs the file to disk.
func (c *checkpoint) sync() error {
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("engine: checkpoint: %w", err)
	}
	if err := c.f.Sync(); err != nil {
		return fmt.Errorf("engine: checkpoint: %w", err)
	}
	c.dirty.Store(false)
	return nil
}

// Close stops the syncer and closes the file.
func (c *checkpoint) Close() error {
	close(c.stop)
	<-c.ended
	return c.f.Close()
}

// samples are the finished samples of docs, in document order.
func (c *checkpoint) samples(docs []task.Doc) []results.Sample {
	out := make([]results.Sample, 0, len(docs))
	for _, d := range docs {
		if s, ok := c.done[results.Key(d.Task, d.Index)]; ok {
			out = append(out, s)
		}
	}
	return out
}

// readCheckpoint reads the finished samples, and the length of the file up to the end
// of its last whole line.
func readCheckpoint(path string) (map[string]results.Sample, int64, error) {
	done := map[string]results.Sample{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return done, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("engine: checkpoint: %w", err)
	}
	var good int64
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // no newline: cut short by a crash; that sample is asked again
		}
		var s results.Sample
		if err := json.Unmarshal(b[:i], &s); err != nil {
			break
		}
		done[s.Key()] = s
		good += int64(i + 1)
		b = b[i+1:]
	}
	return done, good, nil
}
