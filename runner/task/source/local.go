package source

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/evalflow/evalflow/runner/task/schema"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/parquet-go/parquet-go"
)

// Local formats: a task's own data files, as lm-eval's dataset_path json, csv or
// parquet names them (Hugging Face's loaders), with dataset_kwargs.data_files saying
// which file holds which split, each under the data directory's custom/.
var localFormats = map[string]func(b []byte) ([]map[string]any, error){
	"json":    readJSON,
	"csv":     readCSV,
	"parquet": readParquet,
}

// LocalFormats are the dataset_path values that name a task's own data files.
func LocalFormats() []string { return slices.Sorted(maps.Keys(localFormats)) }

// DataFiles are the files of each split a task with its own data names: data_files
// as Hugging Face reads it (a file or a list of them: the train split; else split to
// file or files), each a relative path under the data directory's custom/. Nil for a
// task on a hub dataset.
func DataFiles(t *schema.Task) (map[string][]string, error) {
	if _, ok := localFormats[t.DatasetPath]; !ok {
		return nil, nil
	}
	files := map[string][]string{}
	switch v := t.DatasetKwargs["data_files"].(type) {
	case string, []any:
		files["train"] = names(v)
	case map[string]any:
		for split, f := range v {
			files[split] = names(f)
		}
	}
	if len(files) == 0 {
		return nil, evalflow.Invalidf("dataset_kwargs.data_files", "task %s: dataset_path %s needs data_files: a file under the data directory's custom/, or a split to each", t.Task, t.DatasetPath)
	}
	for split, list := range files {
		if len(list) == 0 {
			return nil, evalflow.Invalidf("dataset_kwargs.data_files."+split, "task %s: names no file", t.Task)
		}
		for _, f := range list {
			if f == "" || path.IsAbs(f) || strings.Contains(f, "..") || strings.Contains(f, `\`) {
				return nil, evalflow.Invalidf("dataset_kwargs.data_files."+split, "task %s: %q must be a relative path under the data directory's custom/, without ..", t.Task, clip(f))
			}
		}
	}
	return files, nil
}

// names is a data_files entry's files: one, or a list.
func names(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, f := range v {
			if s, ok := f.(string); ok {
				out = append(out, s)
			} else {
				return nil
			}
		}
		return out
	}
	return nil
}

// localCopy is a dataset read from a task's own data files.
func localCopy(t *schema.Task) (dataset, error) {
	files, err := DataFiles(t)
	if err != nil {
		return dataset{}, err
	}
	parse := localFormats[t.DatasetPath]
	read := func(dataDir, _, split string) ([]map[string]any, error) {
		list, ok := files[split]
		if !ok {
			return nil, evalflow.Invalidf("dataset_kwargs.data_files", "task %s: no data file for its split %q", t.Task, split)
		}
		var rows []map[string]any
		for _, f := range list {
			b, err := os.ReadFile(filepath.Join(dataDir, "custom", filepath.FromSlash(f)))
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f, err)
			}
			r, err := parse(b)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f, err)
			}
			rows = append(rows, r...)
		}
		return rows, nil
	}
	first := func(string) string {
		for _, s := range []string{t.TestSplit, t.ValidationSplit, "train"} {
			if list := files[s]; len(list) > 0 {
				return "custom/" + list[0]
			}
		}
		return ""
	}
	return dataset{read, first}, nil
}

// readJSON reads JSON Lines, or one JSON array of records, numbers as Python's json
// reads them (an integer an int, else a float).
func readJSON(b []byte) ([]map[string]any, error) {
	var rows []map[string]any
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.UseNumber()
		if err := dec.Decode(&rows); err != nil {
			return nil, err
		}
		for _, r := range rows {
			pythonValues(r)
		}
		return rows, nil
	}
	for i, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		rows = append(rows, pythonValues(r).(map[string]any))
	}
	return rows, nil
}

// readCSV reads a CSV file with a header row, a column whose every value is an
// integer read as ints, else as floats where each is a number, else as text (as
// pandas, under Hugging Face's csv loader, infers them).
func readCSV(b []byte) ([]map[string]any, error) {
	r := csv.NewReader(bytes.NewReader(b))
	header, err := r.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	records, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	columns := make([]func(string) any, len(header))
	for c := range header {
		columns[c] = columnType(records, c)
	}
	rows := make([]map[string]any, len(records))
	for i, rec := range records {
		row := make(map[string]any, len(header))
		for c, name := range header {
			row[name] = columns[c](rec[c])
		}
		rows[i] = row
	}
	return rows, nil
}

// columnType is how column c's values read: ints, floats or text.
func columnType(records [][]string, c int) func(string) any {
	ints, floats := true, true
	for _, rec := range records {
		if _, err := strconv.ParseInt(rec[c], 10, 64); err != nil {
			ints = false
		}
		if _, err := strconv.ParseFloat(rec[c], 64); err != nil {
			floats = false
		}
	}
	switch {
	case ints && len(records) > 0:
		return func(s string) any { n, _ := strconv.ParseInt(s, 10, 64); return int(n) }
	case floats && len(records) > 0:
		return func(s string) any { f, _ := strconv.ParseFloat(s, 64); return f }
	}
	return func(s string) any { return s }
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// readParquet reads a Parquet file's rows by its own schema, integers as ints.
func readParquet(b []byte) ([]map[string]any, error) {
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, err
	}
	r := parquet.NewReader(f)
	defer r.Close()
	var rows []map[string]any
	for {
		row := map[string]any{}
		if err := r.Read(&row); err == io.EOF {
			return rows, nil
		} else if err != nil {
			return nil, fmt.Errorf("row %d: %w", len(rows), err)
		}
		rows = append(rows, pythonValues(row).(map[string]any))
	}
}

// pythonValues are a row's values as Python reads them, in place: a JSON number an int
// where it is written as an integer, else a float; a Parquet integer an int, its
// float32 a float64.
func pythonValues(v any) any {
	switch v := v.(type) {
	case json.Number:
		if !strings.ContainsAny(v.String(), ".eE") {
			if n, err := v.Int64(); err == nil {
				return int(n)
			}
		}
		f, _ := v.Float64()
		return f
	case int64:
		return int(v)
	case int32:
		return int(v)
	case float32:
		return float64(v)
	case map[string]any:
		for k, x := range v {
			v[k] = pythonValues(x)
		}
	case []any:
		for i, x := range v {
			v[i] = pythonValues(x)
		}
	}
	return v
}
