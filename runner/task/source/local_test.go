package source

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/evalflow/evalflow/runner/task/schema"
)

// A task's own files read as Hugging Face's loaders read them: JSON numbers as Python
// reads them, CSV columns typed as pandas types them, Parquet by its own schema.
func TestATasksOwnFilesReadAsHuggingFacesLoaders(t *testing.T) {
	jsonl, err := readJSON([]byte("{\"q\": \"a\", \"n\": 4, \"f\": 4.0, \"l\": [1, 2.5]}\n\n{\"q\": \"b\", \"n\": -1, \"f\": 1e3, \"l\": []}\n"))
	if err != nil || fmt.Sprint(jsonl) != "[map[f:4 l:[1 2.5] n:4 q:a] map[f:1000 l:[] n:-1 q:b]]" {
		t.Errorf("JSON lines: %v %v", jsonl, err)
	}
	if _, isInt := jsonl[0]["n"].(int); !isInt {
		t.Errorf("an integer reads as %T; Python's json reads an int", jsonl[0]["n"])
	}
	if _, isFloat := jsonl[0]["f"].(float64); !isFloat {
		t.Errorf("4.0 reads as %T; Python's json reads a float", jsonl[0]["f"])
	}
	array, err := readJSON([]byte(`[{"q": "a"}, {"q": "b"}]`))
	if err != nil || len(array) != 2 || array[1]["q"] != "b" {
		t.Errorf("a JSON array: %v %v", array, err)
	}
	rows, err := readCSV([]byte("q,n,f,mixed\na,1,1.5,x\nb,2,2,3\n"))
	if err != nil || fmt.Sprintf("%T %T %T %T", rows[0]["q"], rows[0]["n"], rows[0]["f"], rows[1]["mixed"]) != "string int float64 string" {
		t.Errorf("CSV: %v %v", rows, err)
	}
	type row struct {
		Q string   `parquet:"q"`
		N int64    `parquet:"n"`
		F float32  `parquet:"f"`
		L []string `parquet:"l,list"`
	}
	var b bytes.Buffer
	if err := parquet.Write(&b, []row{{"a", 4, 0.5, []string{"x", "y"}}, {"b", 7, 1, nil}}); err != nil {
		t.Fatal(err)
	}
	pq, err := readParquet(b.Bytes())
	if err != nil || fmt.Sprint(pq) != "[map[f:0.5 l:[x y] n:4 q:a] map[f:1 l:[] n:7 q:b]]" {
		t.Errorf("Parquet: %v %v", pq, err)
	}
	if _, isInt := pq[0]["n"].(int); !isInt {
		t.Errorf("a Parquet int64 reads as %T", pq[0]["n"])
	}
}

// data_files is a file (the train split), a list, or a split to each; each a relative
// path under custom/.
func TestDataFilesAreNamedAsHuggingFaceNamesThem(t *testing.T) {
	for _, c := range []struct {
		files any
		want  string
	}{
		{"a.jsonl", "map[train:[a.jsonl]]"},
		{[]any{"a.jsonl", "b.jsonl"}, "map[train:[a.jsonl b.jsonl]]"},
		{map[string]any{"test": "t.csv", "train": []any{"x.csv"}}, "map[test:[t.csv] train:[x.csv]]"},
		{"../secret.jsonl", "error"}, {"/etc/passwd", "error"}, {nil, "error"}, {map[string]any{"test": 3}, "error"},
	} {
		got, err := DataFiles(&schema.Task{Task: "t", DatasetPath: "json", DatasetKwargs: map[string]any{"data_files": c.files}})
		if s := fmt.Sprint(got); (err != nil) != (c.want == "error") || err == nil && s != c.want {
			t.Errorf("data_files %v: %v, %v; want %s", c.files, got, err, c.want)
		}
	}
}
