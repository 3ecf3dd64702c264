package lmeval

import (
	"bufio"
	"bytes"
	"io"
	"regexp"
	"strconv"
)

// barRE matches a tqdm update of lm_eval's API requests, e.g.
// "Requesting API:  45%|████▌     | 45/100 [00:10<00:12,  4.50it/s]".
var barRE = regexp.MustCompile(`Requesting API:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)`)

// Progress follows lm_eval's "Requesting API" bars: lm_eval runs one bar per kind of
// request (loglikelihood, then generation), so done and total add up the bars seen.
type Progress struct {
	finished   int // requests of the bars that are over
	n, total   int // the current bar
	seenABar   bool
	reportFunc func(done, total int)
}

// Scan reads lm_eval's stderr from r until it ends: every bar update goes to report
// as done and total requests; every other line is copied to w (lm_eval's log).
func Scan(r io.Reader, w io.Writer, report func(done, total int)) error {
	p := &Progress{reportFunc: report}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	sc.Split(splitLines)
	for sc.Scan() {
		line := sc.Bytes()
		if !p.update(line) && len(bytes.TrimSpace(line)) > 0 {
			if _, err := w.Write(append(line, '\n')); err != nil {
				return err
			}
		}
	}
	return sc.Err()
}

// update reads one line; it reports whether the line was a bar update.
func (p *Progress) update(line []byte) bool {
	m := barRE.FindSubmatch(line)
	if m == nil {
		return false
	}
	n, err1 := strconv.Atoi(string(m[1]))
	total, err2 := strconv.Atoi(string(m[2]))
	if err1 != nil || err2 != nil {
		return false
	}
	if p.seenABar && (total != p.total || n < p.n) { // a new bar
		p.finished += p.total
	}
	p.seenABar = true
	p.n, p.total = n, total
	p.reportFunc(p.finished+n, p.finished+total)
	return true
}

// splitLines splits at "\n" and at tqdm's "\r".
func splitLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
