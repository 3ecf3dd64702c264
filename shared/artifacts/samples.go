package artifacts

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	json "github.com/goccy/go-json"

	evalflow "github.com/evalflow/evalflow/shared"
)

// readSamples reads samples.jsonl as it streams in; a line that is not a sample is an
// error naming it. Chunks of lines are decoded on every core and kept in order.
// go-json decodes them in about 60% of encoding/json's time (BenchmarkRead): it is
// what the results page waits for on a run's first opening.
func readSamples(r io.Reader) (*evalflow.Samples, error) {
	workers := max(1, runtime.GOMAXPROCS(0))
	in, out := make(chan *chunk, 2*workers), make(chan *chunk, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range in {
				c.decode()
				out <- c
			}
		})
	}
	read := make(chan error, 1)
	go func() {
		defer close(in)
		read <- splitLines(r, in, chunkSize)
	}()
	go func() {
		wg.Wait()
		close(out)
	}()
	var chunks []*chunk
	for c := range out {
		chunks = append(chunks, c)
	}
	if err := <-read; err != nil {
		return nil, fmt.Errorf("samples.jsonl: %w", err)
	}
	slices.SortFunc(chunks, func(a, b *chunk) int { return a.firstLine - b.firstLine })
	var list []evalflow.Sample
	for _, c := range chunks {
		if c.err != nil {
			return nil, c.err
		}
		list = append(list, c.samples...)
	}
	return evalflow.NewSamples(list), nil
}

// chunk is a run of samples.jsonl's whole lines, decoded together.
type chunk struct {
	firstLine int
	buf       []byte
	samples   []evalflow.Sample
	err       error
}

// chunkSize is about how many bytes of lines a worker decodes at a time; maxLine
// bounds one line.
const (
	chunkSize = 1 << 20
	maxLine   = 16 << 20
)

// splitLines cuts r into chunks of whole lines of about size bytes, reading each byte
// into its chunk once.
func splitLines(r io.Reader, to chan<- *chunk, size int) error {
	first, carry := 1, []byte(nil)
	for {
		buf := make([]byte, size+len(carry))
		n := copy(buf, carry)
		m, err := io.ReadFull(r, buf[n:])
		buf = buf[:n+m]
		cut := bytes.LastIndexByte(buf, '\n') + 1 // after the last whole line
		if len(buf)-cut > maxLine {
			return fmt.Errorf("line %d is longer than %d bytes", first+bytes.Count(buf[:cut], []byte{'\n'}), maxLine)
		}
		end := cut
		if err != nil { // the end: every byte left
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				return err
			}
			end = len(buf)
		}
		if end > 0 {
			c := &chunk{firstLine: first, buf: buf[:end]}
			first += bytes.Count(c.buf, []byte{'\n'})
			to <- c
		}
		if err != nil {
			return nil
		}
		carry = buf[end:] // read only: copied into the next chunk
	}
}

func (c *chunk) decode() {
	rest := c.buf
	for i := 0; len(rest) > 0; i++ {
		line := rest
		if nl := bytes.IndexByte(rest, '\n'); nl >= 0 {
			line, rest = rest[:nl], rest[nl+1:]
		} else {
			rest = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var x evalflow.Sample
		if err := json.Unmarshal(line, &x); err != nil {
			c.err = fmt.Errorf("samples.jsonl line %d: %w", c.firstLine+i, err)
			return
		}
		c.samples = append(c.samples, x)
	}
	c.buf = nil
}
