package artifacts

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	evalflow "github.com/evalflow/evalflow/shared"
)

// lines is n samples.jsonl lines of about size bytes each, document i with prompt Qi.
func lines(n, size int) []string {
	out := make([]string, n)
	for doc := range out {
		out[doc] = fmt.Sprintf(`{"task": "t%d", "doc_id": %d, "prompt": "Q%d %s"}`, doc%3, doc, doc, strings.Repeat("x", size))
	}
	return out
}

// collect reads every chunk splitLines makes of text in chunks of size bytes.
func collect(t *testing.T, text string, size int) ([]*chunk, error) {
	t.Helper()
	to := make(chan *chunk, 1000)
	err := splitLines(strings.NewReader(text), to, size)
	close(to)
	var out []*chunk
	for c := range to {
		out = append(out, c)
	}
	return out, err
}

func TestSplitLinesCutsWholeLinesAndNumbersThem(t *testing.T) {
	text := strings.Join(lines(100, 50), "\n") // no newline at the end
	chunks, err := collect(t, text, 1000)
	if err != nil || len(chunks) < 5 {
		t.Fatalf("%d chunks, %v; want several", len(chunks), err)
	}
	var joined bytes.Buffer
	line := 1
	for _, c := range chunks {
		if c.firstLine != line {
			t.Fatalf("a chunk starts at line %d, want %d", c.firstLine, line)
		}
		if c.buf[len(c.buf)-1] != '\n' && c != chunks[len(chunks)-1] {
			t.Fatalf("a chunk ends within a line: %q", c.buf[len(c.buf)-20:])
		}
		line += bytes.Count(c.buf, []byte("\n"))
		joined.Write(c.buf)
	}
	if joined.String() != text {
		t.Errorf("the chunks do not make the text again")
	}
	// A line longer than a chunk is carried whole into one; one beyond maxLine fails.
	long := strings.Join(lines(3, 5000), "\n") + "\n"
	if chunks, err := collect(t, long, 1000); err != nil || len(chunks) != 3 || chunks[2].firstLine != 3 {
		t.Errorf("lines longer than a chunk: %d chunks, %v", len(chunks), err)
	}
	if _, err := collect(t, strings.Repeat("x", maxLine+2), 1<<20); err == nil || !strings.Contains(err.Error(), "line 1 is longer") {
		t.Errorf("a line beyond %d bytes: %v", maxLine, err)
	}
}

func TestReadSamplesKeepsTheFilesOrderAcrossChunks(t *testing.T) {
	all := lines(3000, 700) // about 2 MB: three chunks
	s, err := readSamples(strings.NewReader(strings.Join(all, "\n") + "\n"))
	if err != nil || s.Len() != 3000 {
		t.Fatalf("readSamples: %v", err)
	}
	for offset := 0; offset < 3000; offset += evalflow.MaxSamplePage {
		page := s.Query(evalflow.SampleQuery{Offset: offset, Limit: evalflow.MaxSamplePage})
		for i, x := range page.Samples {
			if x.DocID != offset+i {
				t.Fatalf("sample %d is document %d", offset+i, x.DocID)
			}
		}
	}
	if p := s.Query(evalflow.SampleQuery{Text: "q2999 "}); p.Matched != 1 || p.Samples[0].DocID != 2999 {
		t.Errorf("the last sample's text is not searchable: %+v", p.Matched)
	}
	all[1699] = "{broken"
	if _, err := readSamples(strings.NewReader(strings.Join(all, "\n"))); err == nil || !strings.Contains(err.Error(), "line 1700") {
		t.Errorf("a bad line 1700: %v", err)
	}
	if _, err := readSamples(strings.NewReader("{\"task\": \"x\"}\n\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("a bad line after a blank one: %v, want an error naming line 3", err)
	}
}
