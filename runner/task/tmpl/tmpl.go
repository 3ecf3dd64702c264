// Package tmpl renders lm-evaluation-harness's Jinja templates (doc_to_text,
// doc_to_target, doc_to_choice) as lm-eval renders them: Jinja2 with undefined names
// an error, a trailing newline kept, and the Python string and list methods its task
// templates call (split, strip, index, join, slicing, replace, ...). It is gonja, a Go
// port of Jinja2, with the methods it lacks or differs in made as Python has them.
// One thing of Jinja2's it does not parse: a conditional expression as a call's
// argument (f(a if c else b)); a {% set %} before the call says the same.
package tmpl

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"

	"github.com/evalflow/evalflow/runner/task/pyre"
	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// Template is a compiled template; safe to render from many goroutines.
type Template struct {
	src   string
	t     *exec.Template
	field *Template // "{{ src }}", when src could name a document's column
}

// environment is lm-eval's: gonja's filters, tests and statements, with Python's
// methods.
var environment = &exec.Environment{
	Context:           gonja.DefaultContext,
	Filters:           builtins.Filters,
	Tests:             builtins.Tests,
	ControlStructures: builtins.ControlStructures,
	Methods: exec.Methods{
		Bool: builtins.Methods.Bool, Int: builtins.Methods.Int, Float: builtins.Methods.Float, Dict: builtins.Methods.Dict,
		Str:  exec.NewMethodSet(strMethods()),
		List: exec.NewMethodSet(listMethods()),
	},
}

// settings are lm-eval's jinja2.Environment(undefined=StrictUndefined,
// keep_trailing_newline=True).
var settings = func() *config.Config {
	c := config.New()
	c.StrictUndefined = true
	c.KeepTrailingNewline = true
	return c
}()

func init() { gonja.SetLoggerOutput(io.Discard) }

// Compile parses src. A template that does not parse is an error that quotes it.
func Compile(src string) (*Template, error) {
	loader, err := loaders.NewShiftedLoader("template", strings.NewReader(src), nil)
	if err != nil {
		return nil, err
	}
	t, err := exec.NewTemplate("template", settings, loader, environment)
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", clip(src), err)
	}
	out := &Template{src: src, t: t}
	if identifier.MatchString(src) {
		if out.field, err = Compile("{{ " + src + " }}"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// identifier is a name a template may be: a column of the documents.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// RenderField renders a doc_to_text, doc_to_target or doc_to_choice as lm-eval does:
// a template that is the name of one of doc's columns is that column's value (as
// Jinja2 prints it), else the template rendered.
func (t *Template) RenderField(doc map[string]any) (string, error) {
	if _, ok := doc[t.src]; ok && t.field != nil {
		return t.field.Render(doc)
	}
	return t.Render(doc)
}

// Render renders the template with doc's fields as its variables.
func (t *Template) Render(doc map[string]any) (string, error) {
	var b bytes.Buffer
	if err := t.t.Execute(&b, exec.NewContext(doc)); err != nil {
		return "", fmt.Errorf("template %q: %w", clip(t.src), err)
	}
	return b.String(), nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// strMethods are gonja's string methods, with Python's strip family (whitespace
// by default), count, replace (its count optional), and index/rindex (an error when the substring is not there).
func strMethods() map[string]exec.Method[string] {
	m := map[string]exec.Method[string]{}
	for _, name := range []string{"capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "format",
		"isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper",
		"join", "ljust", "lower", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rjust", "rpartition",
		"rsplit", "split", "splitlines", "startswith", "swapcase", "title", "upper", "zfill"} {
		if f, ok := builtins.Methods.Str.Get(name); ok {
			m[name] = f
		}
	}
	strip := func(cut func(string, func(rune) bool) string, cutset func(string, string) string) exec.Method[string] {
		return func(self string, _ *exec.Value, args *exec.VarArgs) (any, error) {
			if len(args.Args) == 0 || args.Args[0].IsNil() {
				return cut(self, pyre.IsSpace), nil
			}
			return cutset(self, args.Args[0].String()), nil
		}
	}
	m["strip"] = strip(strings.TrimFunc, strings.Trim)
	m["lstrip"] = strip(strings.TrimLeftFunc, strings.TrimLeft)
	m["rstrip"] = strip(strings.TrimRightFunc, strings.TrimRight)
	index := func(find func(s, sub string) int) exec.Method[string] {
		return func(self string, _ *exec.Value, args *exec.VarArgs) (any, error) {
			if len(args.Args) != 1 {
				return nil, fmt.Errorf("index takes one argument")
			}
			sub := args.Args[0].String()
			i := find(self, sub)
			if i < 0 {
				return nil, fmt.Errorf("substring %q not found", sub)
			}
			return len([]rune(self[:i])), nil // Python counts characters
		}
	}
	m["count"] = func(self string, _ *exec.Value, args *exec.VarArgs) (any, error) {
		if len(args.Args) != 1 {
			return nil, fmt.Errorf("count takes one argument")
		}
		return strings.Count(self, args.Args[0].String()), nil
	}
	m["replace"] = func(self string, _ *exec.Value, args *exec.VarArgs) (any, error) {
		if len(args.Args) < 2 || len(args.Args) > 3 {
			return nil, fmt.Errorf("replace takes 2 or 3 arguments")
		}
		n := -1
		if len(args.Args) == 3 {
			n = args.Args[2].Integer()
		}
		return strings.Replace(self, args.Args[0].String(), args.Args[1].String(), n), nil
	}
	m["index"] = index(strings.Index)
	m["rindex"] = index(strings.LastIndex)
	return m
}

// listMethods are gonja's list methods with Python's index and count.
func listMethods() map[string]exec.Method[[]any] {
	m := map[string]exec.Method[[]any]{}
	for _, name := range []string{"append", "reverse", "copy"} {
		if f, ok := builtins.Methods.List.Get(name); ok {
			m[name] = f
		}
	}
	find := func(self []any, x *exec.Value) int {
		for i, v := range self {
			if equal(v, x.Interface()) {
				return i
			}
		}
		return -1
	}
	m["index"] = func(self []any, _ *exec.Value, args *exec.VarArgs) (any, error) {
		if len(args.Args) != 1 {
			return nil, fmt.Errorf("index takes one argument")
		}
		if i := find(self, args.Args[0]); i >= 0 {
			return i, nil
		}
		return nil, fmt.Errorf("%v is not in list", args.Args[0].Interface())
	}
	m["count"] = func(self []any, _ *exec.Value, args *exec.VarArgs) (any, error) {
		if len(args.Args) != 1 {
			return nil, fmt.Errorf("count takes one argument")
		}
		n := 0
		for _, v := range self {
			if equal(v, args.Args[0].Interface()) {
				n++
			}
		}
		return n, nil
	}
	return m
}

// equal is Python's == for the values documents hold: numbers by value whatever their
// Go type, anything else as Go compares it.
func equal(a, b any) bool {
	fa, aNum := number(a)
	fb, bNum := number(b)
	if aNum && bNum {
		return fa == fb
	}
	return reflect.DeepEqual(a, b)
}

func number(v any) (float64, bool) {
	switch x := reflect.ValueOf(v); x.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(x.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(x.Uint()), true
	case reflect.Float32, reflect.Float64:
		return x.Float(), true
	}
	return 0, false
}
