// Package tasks is the catalogue of tasks evalflow ships, as task and group files in
// lm-eval's schema (embedded), by lm-eval's names: BIG-Bench Hard in its four forms
// (bbh_zeroshot, bbh_fewshot, bbh_cot_zeroshot, bbh_cot_fewshot, and bbh, lm-eval's
// name for the few-shot chain-of-thought group) and each bbh_<form>_<task>.
package tasks

//go:generate go run ./gen -shared ../../../../shared
//go:generate go test -run TestTheTableOfShippedTasksIsTheFiles . -args -update

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/evalflow/evalflow/runner/task/schema"
)

//go:embed all:bbh all:gsm8k all:lambada all:truthfulqa all:winogrande
var files embed.FS

// Catalogue is a set of tasks and groups by name.
type Catalogue struct {
	tasks  map[string]*schema.Task
	groups map[string]*schema.Group
}

// Shipped is the catalogue of the embedded files.
var Shipped = sync.OnceValues(func() (*Catalogue, error) { return Read(files) })

// Read reads every task and group file of fsys (files neither, templates, are read
// through the tasks that include them). A task is checked when Resolve gives it: a
// run checks the tasks it asks, not all of them.
func Read(fsys fs.FS) (*Catalogue, error) {
	c := &Catalogue{tasks: map[string]*schema.Task{}, groups: map[string]*schema.Group{}}
	l := schema.NewLoader(fsys)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".yaml" {
			return err
		}
		t, g, err := l.File(p)
		switch {
		case err != nil:
			return err
		case g != nil:
			return c.add(g.Group, nil, g)
		case t != nil:
			return c.add(t.Task, t, nil)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for name, g := range c.groups {
		for _, m := range g.Task {
			if c.tasks[m] == nil && c.groups[m] == nil {
				return nil, fmt.Errorf("group %s: no task or group %s", name, m)
			}
		}
	}
	return c, nil
}

func (c *Catalogue) add(name string, t *schema.Task, g *schema.Group) error {
	if c.tasks[name] != nil || c.groups[name] != nil {
		return fmt.Errorf("two files name %s", name)
	}
	if t != nil {
		c.tasks[name] = t
	} else {
		c.groups[name] = g
	}
	return nil
}

// Names are every task and group name, sorted.
func (c *Catalogue) Names() []string {
	var out []string
	for n := range c.tasks {
		out = append(out, n)
	}
	for n := range c.groups {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Task is the task of that name, or nil.
func (c *Catalogue) Task(name string) *schema.Task { return c.tasks[name] }

// Group is the group of that name, or nil.
func (c *Catalogue) Group(name string) *schema.Group { return c.groups[name] }

// Member is one task a name stands for, and the group it is scored in ("" alone).
type Member struct {
	Task  *schema.Task
	Group string
}

// Resolve is the tasks a name stands for, in order, each checked: the task itself, or
// a group's tasks (a nested group's, each scored in the group the name named).
func (c *Catalogue) Resolve(name string) ([]Member, error) {
	members, err := c.members(name)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if err := m.Task.Check(); err != nil {
			return nil, fmt.Errorf("task %s: %w", m.Task.Task, err)
		}
	}
	return members, nil
}

func (c *Catalogue) members(name string) ([]Member, error) {
	if t := c.tasks[name]; t != nil {
		return []Member{{Task: t}}, nil
	}
	g := c.groups[name]
	if g == nil {
		return nil, fmt.Errorf("no task or group %q (known: %s)", name, strings.Join(c.Names(), ", "))
	}
	var out []Member
	var walk func(g *schema.Group, depth int) error
	walk = func(g *schema.Group, depth int) error {
		if depth > 4 {
			return fmt.Errorf("group %s nests too deep", name)
		}
		for _, m := range g.Task {
			if t := c.tasks[m]; t != nil {
				out = append(out, Member{Task: t, Group: name})
			} else if err := walk(c.groups[m], depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(g, 0)
}
