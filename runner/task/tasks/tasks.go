// Package tasks is the catalogue of tasks evalflow ships, as task and group files in
// lm-eval's schema (embedded), by lm-eval's names: MMLU (mmlu, its category groups and
// mmlu_<subject>; mmlu_generative), GSM8K (gsm8k, gsm8k_cot, gsm8k_cot_zeroshot),
// BIG-Bench Hard in its four forms (bbh_zeroshot, bbh_fewshot, bbh_cot_zeroshot,
// bbh_cot_fewshot, and bbh, lm-eval's name for the few-shot chain-of-thought group) and
// each bbh_<form>_<task>, TruthfulQA (truthfulqa_mc1, _mc2, _gen), winogrande and
// lambada_openai. A group lists tasks, groups, tags (the tasks that carry one) or groups
// written in place.
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

//go:embed all:bbh all:gsm8k all:humaneval all:ifeval all:lambada all:mmlu all:truthfulqa all:winogrande
var files embed.FS

// Catalogue is a set of tasks and groups by name, and the tasks each tag names. A
// task's file is decoded when it is first asked for: a run reads the tasks it asks.
type Catalogue struct {
	mu     sync.Mutex // guards loader
	loader *schema.Loader
	tasks  map[string]*entry
	groups map[string]*schema.Group
	tags   map[string][]string // tag → its tasks, sorted
}

// entry is one task's file, decoded once.
type entry struct {
	path string
	once sync.Once
	task *schema.Task
	err  error
}

// Shipped is the catalogue of the embedded files.
var Shipped = sync.OnceValues(func() (*Catalogue, error) { return Read(files) })

// Read indexes every task and group file of fsys by name (files neither, templates,
// are read through the tasks that include them). A task is decoded and checked when
// Resolve gives it.
func Read(fsys fs.FS) (*Catalogue, error) {
	c := &Catalogue{loader: schema.NewLoader(fsys), tasks: map[string]*entry{}, groups: map[string]*schema.Group{}, tags: map[string][]string{}}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".yaml" {
			return err
		}
		name, tags, g, err := c.loader.Head(p)
		switch {
		case err != nil:
			return err
		case g != nil:
			return c.add(g.Group, nil, g)
		case name != "":
			for _, tag := range tags {
				c.tags[tag] = append(c.tags[tag], name)
			}
			return c.add(name, &entry{path: p}, nil)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for tag, names := range c.tags {
		if c.tasks[tag] != nil || c.groups[tag] != nil {
			return nil, fmt.Errorf("tag %s is also a task or group's name", tag)
		}
		slices.Sort(names)
	}
	for _, g := range c.groups {
		if err := c.walk([]*schema.Group{g}, func(string, []*schema.Group) error { return nil }); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Catalogue) add(name string, t *entry, g *schema.Group) error {
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

// load decodes a task's file, once.
func (c *Catalogue) load(e *entry) (*schema.Task, error) {
	e.once.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		e.task, e.err = c.loader.Task(e.path)
	})
	return e.task, e.err
}

// nameableTags are the tags a run may name: those of which evalflow ships every task
// lm-eval tags so (lm-eval's lambada tag also has lambada_standard, its
// math_word_problems many tasks not here).
var nameableTags = []string{"truthfulqa"}

// Names are every task, group and nameable tag, sorted.
func (c *Catalogue) Names() []string {
	var out []string
	for n := range c.tasks {
		out = append(out, n)
	}
	for n := range c.groups {
		out = append(out, n)
	}
	for _, n := range nameableTags {
		if c.tags[n] != nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Tag is the tasks a nameable tag names, sorted (nil for any other name).
func (c *Catalogue) Tag(name string) []string {
	if !slices.Contains(nameableTags, name) {
		return nil
	}
	return c.tags[name]
}

// Task is the task of that name, or nil (nor when its file does not decode: Resolve
// says why).
func (c *Catalogue) Task(name string) *schema.Task {
	e := c.tasks[name]
	if e == nil {
		return nil
	}
	t, _ := c.load(e)
	return t
}

// Group is the group of that name, or nil.
func (c *Catalogue) Group(name string) *schema.Group { return c.groups[name] }

// Member is one task a name stands for, and the groups it is scored in: the group
// the name named first, then each nested group down to the one that lists it (none
// when the name is the task's).
type Member struct {
	Task   *schema.Task
	Groups []*schema.Group
}

// Resolve is the tasks a name stands for, in order, each checked: the task itself, a
// tag's tasks (each alone), or a group's tasks (a nested group's, or a tag's in a group's list, each scored in
// every group above it, as lm-eval's groups aggregate their leaf tasks).
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

// Children are the names a group's list stands for: its tasks and groups, each tag's
// tasks in its place, and the tasks of a group written in place.
func (c *Catalogue) Children(g *schema.Group) []string {
	var out []string
	for _, m := range g.Task {
		switch {
		case m.Inline != nil:
			out = append(out, c.Children(m.Inline)...)
		case c.tags[m.Name] != nil:
			out = append(out, c.tags[m.Name]...)
		default:
			out = append(out, m.Name)
		}
	}
	return out
}

func (c *Catalogue) members(name string) ([]Member, error) {
	if e := c.tasks[name]; e != nil {
		t, err := c.load(e)
		return []Member{{Task: t}}, err
	}
	if tasks := c.Tag(name); tasks != nil { // each task alone, as lm-eval runs a tag
		out := make([]Member, len(tasks))
		for i, n := range tasks {
			t, err := c.load(c.tasks[n])
			if err != nil {
				return nil, err
			}
			out[i] = Member{Task: t}
		}
		return out, nil
	}
	g := c.groups[name]
	if g == nil {
		return nil, fmt.Errorf("no task or group %q (known: %s)", name, strings.Join(c.Names(), ", "))
	}
	var out []Member
	err := c.walk([]*schema.Group{g}, func(task string, path []*schema.Group) error {
		t, err := c.load(c.tasks[task])
		out = append(out, Member{Task: t, Groups: path})
		return err
	})
	return out, err
}

// walk calls visit with each task of the last group of path, in order, and the
// groups it is within: a task, each of a tag's tasks, each of a nested group's.
func (c *Catalogue) walk(path []*schema.Group, visit func(task string, path []*schema.Group) error) error {
	g := path[len(path)-1]
	if len(path) > 5 {
		return fmt.Errorf("group %s nests too deep", path[0].Group)
	}
	for _, m := range g.Task {
		var err error
		switch {
		case m.Inline != nil:
			err = c.walk(append(slices.Clip(path), m.Inline), visit)
		case c.tasks[m.Name] != nil:
			err = visit(m.Name, slices.Clip(path))
		case c.tags[m.Name] != nil:
			for _, t := range c.tags[m.Name] {
				if err = visit(t, slices.Clip(path)); err != nil {
					break
				}
			}
		case c.groups[m.Name] != nil:
			err = c.walk(append(slices.Clip(path), c.groups[m.Name]), visit)
		default:
			err = fmt.Errorf("group %s: no task, group or tag %s", g.Group, m.Name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
