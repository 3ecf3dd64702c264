package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
)

// The commands for a running evalflow (evalflow up's, or a cluster's START_URL):
//
//	evalflow submit  [flags]           start a run and follow it to its end
//	evalflow status  ID...             where runs are
//	evalflow list    [--status S]      the caller's runs, newest first
//	evalflow cancel  ID...             cancel runs
//	evalflow results ID [--dir DIR]    a run's results.json and samples.jsonl into DIR
//	evalflow compare ID ID...          runs side by side, task by task
//	evalflow deadletters [--run ID]    events Triggers could not deliver, newest first
//
// Each takes --api URL (default $EVALFLOW_API, else local mode's http://127.0.0.1:8080)
// and --output table|json; the caller's token comes from $EVALFLOW_TOKEN.

// apiCommand is the flags every API command has.
type apiCommand struct {
	fs     *flag.FlagSet
	api    *string
	output *string
}

func newAPICommand(name string) *apiCommand {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	return &apiCommand{fs: fs,
		api:    fs.String("api", cmp.Or(os.Getenv("EVALFLOW_API"), "http://127.0.0.1:8080"), "the evalflow API (local mode's, or a cluster's START_URL)"),
		output: fs.String("output", "table", "table or json")}
}

// parse reads flags and arguments in any order, and returns the arguments; want is
// how many there must be at least.
func (c *apiCommand) parse(args []string, want int, usage string) ([]string, error) {
	var pos []string
	for {
		_ = c.fs.Parse(args)
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if *c.output != "table" && *c.output != "json" {
		return nil, fmt.Errorf("--output: must be table or json, got %q", *c.output)
	}
	if len(pos) < want {
		return nil, fmt.Errorf("usage: evalflow %s %s", c.fs.Name(), usage)
	}
	return pos, nil
}

func (c *apiCommand) client() *client { return newClient(*c.api, os.Getenv("EVALFLOW_TOKEN")) }

func (c *apiCommand) json() bool { return *c.output == "json" }

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// errNotSucceeded ends the command with status 1 once its output is written.
var errNotSucceeded = errors.New("the run did not succeed")

func submit(ctx context.Context, args []string) error {
	c := newAPICommand("submit")
	baseURL := c.fs.String("base-url", "", "the model's OpenAI-compatible endpoint, as the cluster reaches it (the API key comes from $EVALFLOW_API_KEY)")
	detach := c.fs.Bool("detach", false, "print the run's id and return at once, without following it")
	request := requestFlags(c.fs, "")
	if _, err := c.parse(args, 0, "[flags]"); err != nil {
		return err
	}
	req, err := request(*baseURL)
	if err != nil {
		return err
	}
	api := c.client()
	id, err := api.submit(ctx, req)
	if err != nil {
		return err
	}
	if *detach {
		if c.json() {
			return printJSON(map[string]string{"run_id": id})
		}
		fmt.Println(id)
		return nil
	}
	fmt.Fprintf(os.Stderr, "run %s submitted to %s\n", id, *c.api)
	r, err := follow(ctx, api, id)
	if err != nil {
		return err
	}
	if c.json() {
		err = printJSON(r)
	} else {
		printResults(os.Stdout, r)
	}
	if err == nil && r.Status != evalflow.StatusSucceeded {
		err = fmt.Errorf("run %s %s: %s: %w", r.ID, r.Status, r.Message, errNotSucceeded)
	}
	return err
}

func status(ctx context.Context, args []string) error {
	c := newAPICommand("status")
	ids, err := c.parse(args, 1, "ID... [--api URL] [--output json]")
	if err != nil {
		return err
	}
	runs, err := forEach(ctx, ids, c.client().run)
	if err != nil {
		return err
	}
	if c.json() {
		if len(runs) == 1 {
			return printJSON(runs[0])
		}
		return printJSON(runs)
	}
	for _, r := range runs {
		printStatus(os.Stdout, r)
	}
	return nil
}

// forEach calls do for each run id in turn, and returns the runs it answered.
func forEach(ctx context.Context, ids []string, do func(context.Context, string) (*evalflow.Run, error)) ([]*evalflow.Run, error) {
	runs := make([]*evalflow.Run, 0, len(ids))
	for _, id := range ids {
		r, err := do(ctx, id)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// printStatus writes where run r is, a field a line.
func printStatus(w io.Writer, r *evalflow.Run) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%s\n", r.ID)
	fmt.Fprintf(tw, "model\t%s\n", r.ModelName)
	fmt.Fprintf(tw, "status\t%s (step %s)\n", r.Status, r.Step)
	if r.Progress.Total > 0 {
		line := fmt.Sprintf("%d/%d", r.Progress.Done, r.Progress.Total)
		if r.Status == evalflow.StatusRunning && r.Progress.ETASeconds > 0 {
			line += fmt.Sprintf(", ETA %.0fs", r.Progress.ETASeconds)
		}
		fmt.Fprintf(tw, "progress\t%s\n", line)
	}
	if r.Queued && !r.Status.Terminal() {
		fmt.Fprintf(tw, "queued\tplace %d\n", r.QueuePosition)
	}
	if r.Message != "" {
		fmt.Fprintf(tw, "message\t%s\n", r.Message)
	}
	fmt.Fprintf(tw, "created\t%s\n", r.CreatedAt.Local().Format(time.DateTime))
	if r.Artifact != nil {
		fmt.Fprintf(tw, "results\t%s\n", r.Artifact.Reference)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func list(ctx context.Context, args []string) error {
	c := newAPICommand("list")
	st := c.fs.String("status", "", "only runs of this status (pending, running, succeeded, failed, cancelled, …)")
	limit := c.fs.Int("limit", 50, "at most this many runs")
	if _, err := c.parse(args, 0, "[--status S] [--limit N]"); err != nil {
		return err
	}
	runs, err := c.client().list(ctx, *st, *limit)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(runs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tMODEL\tSTATUS\tSTEP\tPROGRESS\tCREATED")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\n", r.ID, r.ModelName, r.Status, r.Step, r.Progress.Done, r.Progress.Total,
			r.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func cancel(ctx context.Context, args []string) error {
	c := newAPICommand("cancel")
	ids, err := c.parse(args, 1, "ID...")
	if err != nil {
		return err
	}
	runs, err := forEach(ctx, ids, c.client().cancel)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(runs)
	}
	for _, r := range runs {
		fmt.Printf("run %s: %s\n", r.ID, r.Status)
	}
	return nil
}

func results(ctx context.Context, args []string) error {
	c := newAPICommand("results")
	dir := c.fs.String("dir", "", "where to write results.json and samples.jsonl (default: ./ID)")
	ids, err := c.parse(args, 1, "ID [--dir DIR]")
	if err != nil {
		return err
	}
	id, api := ids[0], c.client()
	out := cmp.Or(*dir, id)
	var res evalflow.Results
	for _, name := range []string{evalflow.ResultsFile, evalflow.SamplesFile} {
		b, err := api.file(ctx, id, name)
		if err != nil {
			return err
		}
		if name == evalflow.ResultsFile {
			if err := json.Unmarshal(b, &res); err != nil {
				return fmt.Errorf("results of run %s: %s: %w", id, name, err)
			}
		}
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return fmt.Errorf("results of run %s: %w", id, err)
		}
	}
	if c.json() {
		return printJSON(map[string]any{"run_id": id, "dir": out, "scores": res.Scores(), "summary": res.Summary})
	}
	printScores(os.Stdout, res.Scores())
	fmt.Printf("(%d samples; %s and %s in %s)\n", res.Summary.Samples, evalflow.ResultsFile, evalflow.SamplesFile, out)
	return nil
}

// printScores writes a table of scores with their standard errors.
func printScores(w io.Writer, scores []evalflow.TaskScore) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tMETRIC\tVALUE\tSTDERR\tSAMPLES")
	for _, s := range scores {
		fmt.Fprintf(tw, "%s\t%s\t%.4f\t±%.4f\t%s\n", s.Task, s.Metric, s.Value, s.Stderr, count(s.Samples))
	}
	tw.Flush()
}

func count(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprint(n)
}

func compare(ctx context.Context, args []string) error {
	c := newAPICommand("compare")
	ids, err := c.parse(args, 2, "ID ID... (the first is the baseline)")
	if err != nil {
		return err
	}
	comparison, err := c.client().compare(ctx, ids)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(comparison)
	}
	printComparison(os.Stdout, comparison)
	return nil
}

// printComparison writes the per-task table: each run's score, then each later run's
// difference from the first with its p-value, * where significant.
func printComparison(w io.Writer, c *evalflow.Comparison) {
	for i, r := range c.Runs {
		fmt.Fprintf(w, "[%d] %s  %s\n", i+1, r.RunID, r.Model)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"TASK", "METRIC"}
	for i := range c.Runs {
		head = append(head, fmt.Sprintf("[%d]", i+1))
	}
	for i := range c.Runs[1:] {
		head = append(head, fmt.Sprintf("[%d]-[1]", i+2), "p")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, t := range c.Tasks {
		row := []string{t.Task, t.Metric}
		for _, s := range t.Scores {
			if s == nil {
				row = append(row, "-")
				continue
			}
			row = append(row, fmt.Sprintf("%.4f±%.4f", s.Value, s.Stderr))
		}
		for _, d := range t.Diffs {
			if d == nil {
				row = append(row, "-", "-")
				continue
			}
			mark := ""
			if d.Significant {
				mark = " *"
			}
			row = append(row, fmt.Sprintf("%+.4f", d.Delta), fmt.Sprintf("%.4f%s", d.PValue, mark))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n* %s.\n%d samples on which the runs disagree.\n", c.Test, c.DisagreementsTotal)
}

func deadLetters(ctx context.Context, args []string) error {
	c := newAPICommand("deadletters")
	runID := c.fs.String("run", "", "only this run's")
	if _, err := c.parse(args, 0, "[--run ID]"); err != nil {
		return err
	}
	letters, err := c.client().deadLetters(ctx, *runID)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(letters)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tRUN\tTYPE\tDESTINATION\tANSWER")
	for _, d := range letters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Time.Local().Format(time.DateTime), d.RunID, d.Type, d.Destination,
			strings.TrimSpace(d.Code+" "+d.Reason))
	}
	return tw.Flush()
}

// tasks lists what a run may name: evalflow's datasets and lm-eval's tasks and groups
// it ships (NAME...: only those; a group's tasks are listed under it with --expand).
func tasks(ctx context.Context, args []string) error {
	c := newAPICommand("tasks")
	expand := c.fs.Bool("expand", false, "list each group's and tag's tasks under it")
	names, err := c.parse(args, 0, "[--expand] [NAME...]")
	if err != nil {
		return err
	}
	cat, err := c.client().tasks(ctx)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(cat)
	}
	wanted := func(n string) bool { return len(names) == 0 || slices.Contains(names, n) }
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tN-SHOT\tOUTPUT\tMETRICS\tSAMPLES\tDATA")
	for _, d := range cat.Datasets {
		if wanted(d.Name) {
			fmt.Fprintf(tw, "%s\tdataset\t\t%s\t\t%d\t%s/\n", d.Name, cmp.Or(strings.Join(d.Methods, "|"), "generate"), d.Samples, d.Name)
		}
	}
	byName := map[string]evalflow.ShippedTask{}
	for _, t := range cat.Tasks {
		byName[t.Name] = t
	}
	row := func(t evalflow.ShippedTask, indent string) {
		kind := "task"
		switch {
		case t.Group:
			kind = fmt.Sprintf("group of %d", len(t.Tasks))
		case t.Tag:
			kind = fmt.Sprintf("tag of %d", len(t.Tasks))
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%d\t%s\t%s\t%d\t%s\n", indent, t.Name, kind, t.NumFewshot, t.OutputType, strings.Join(t.Metrics, " "), t.Samples, t.Source)
	}
	for _, t := range cat.Tasks {
		inGroup := false
		for _, g := range cat.Tasks {
			inGroup = inGroup || (g.Group && slices.Contains(g.Tasks, t.Name))
		}
		if !wanted(t.Name) || (inGroup && len(names) == 0) {
			continue
		}
		row(t, "")
		if (t.Group || t.Tag) && *expand {
			for _, m := range t.Tasks {
				row(byName[m], "  ")
			}
		}
	}
	return tw.Flush()
}
