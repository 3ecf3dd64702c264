package tasks_test

import (
	"testing"

	"github.com/evalflow/evalflow/runner/task/tasks"
)

// Every shipped file reads and passes the schema's check; each form's group holds its
// 27 tasks.
func TestTheShippedTasksReadAndCheck(t *testing.T) {
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.Names()); n != 4*27+5 {
		t.Errorf("%d names; want 4 forms of 27 tasks and 5 groups", n)
	}
	for _, g := range []string{"bbh", "bbh_zeroshot", "bbh_fewshot", "bbh_cot_zeroshot", "bbh_cot_fewshot"} {
		m, err := c.Resolve(g)
		if err != nil || len(m) != 27 {
			t.Errorf("%s: %d tasks, %v", g, len(m), err)
		}
	}
}
