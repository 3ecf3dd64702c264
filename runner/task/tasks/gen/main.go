// Command gen writes the task files evalflow generates, in lm-eval's task schema:
// BIG-Bench Hard's from its chain-of-thought prompts (../shared/datasets/bbh/cot-prompts):
// each of the 27 tasks in lm-eval's four forms (zeroshot, fewshot, cot_zeroshot,
// cot_fewshot), with lm-eval's filters for each task, a template each form includes,
// and a group for each form; and MMLU's (mmlu.go), a task for each of the subjects in
// ../shared/datasets/mmlu.
//
//	go run ./gen -shared ../../../../shared
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// answer is how a chain of thought ends: "... So the answer is X."
var answer = regexp.MustCompile(`answer is (.*).`)

// kinds name how lm-eval extracts a task's answer in its zero-shot forms; the rest
// take an option "(X)" (MultiChoiceRegexFilter).
var kinds = map[string]string{
	"boolean_expressions": "bool", "causal_judgement": "yesno", "navigate": "yesno",
	"formal_fallacies": "valid", "dyck_languages": "dyck",
	"multistep_arithmetic_two": "number", "object_counting": "number",
	"sports_understanding": "plausible", "web_of_lies": "truth", "word_sorting": "sort",
}

// cotAnswer is the strict pattern of the zero-shot chain-of-thought form.
const cotAnswer = "((?<=The answer is )(.*)(?=.)|(?<=the answer is )(.*)(?=.)|(?<=The answer: )(.*)(?=.)|(?<=The final answer: )(.*)(?=.))"

func main() {
	shared := flag.String("shared", "../../../../shared", "the shared directory (datasets/bbh)")
	out := flag.String("out", ".", "where the task files go (under bbh/ and mmlu/)")
	flag.Parse()
	bbh(*shared, filepath.Join(*out, "bbh"))
	mmlu(*shared, filepath.Join(*out, "mmlu"))
}

// bbh writes BBH's task files into out.
func bbh(shared, out string) {
	prompts := filepath.Join(shared, "datasets", "bbh", "cot-prompts")
	entries, err := os.ReadDir(prompts)
	if err != nil {
		log.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".txt")
		b, err := os.ReadFile(filepath.Join(prompts, e.Name()))
		if err != nil {
			log.Fatal(err)
		}
		desc, shots, err := parse(string(b))
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		for _, form := range forms {
			write(filepath.Join(out, form.dir, name+".yaml"), form.task(name, desc, shots), bbhHead)
		}
		names = append(names, name)
	}
	for _, form := range forms {
		write(filepath.Join(out, form.dir, "_template.yaml"), form.template, bbhHead)
		write(filepath.Join(out, form.dir, "_group.yaml"), group("bbh_"+form.dir, form.dir, names, form.aggregate), bbhHead)
	}
	write(filepath.Join(out, "cot_fewshot", "_bbh.yaml"), group("bbh", "cot_fewshot", names, "get-answer"), bbhHead)
}

// shot is one worked example of a task's prompt.
type shot struct{ input, reasoning, answer string }

// parse reads a prompt file: a canary, "-----", the task's description (a paragraph
// or more), then
// examples "Q: ...\nA: Let's think step by step.\n... So the answer is X.", each
// paragraph apart.
func parse(text string) (string, []shot, error) {
	parts := strings.Split(text, "\n-----\n")
	paras := strings.Split(parts[len(parts)-1], "\n\n")
	n := 1 // the description's paragraphs: those before the first question
	for n < len(paras) && !strings.HasPrefix(paras[n], "Q: ") {
		n++
	}
	var shots []shot
	for _, p := range paras[n:] {
		q, a, ok := strings.Cut(p, "\nA: Let's think step by step.")
		a = strings.TrimLeft(a, " \n") // a line break after it, or (one task) a space
		if !ok || !strings.HasPrefix(q, "Q: ") {
			return "", nil, fmt.Errorf("an example without its question and reasoning: %.60q", p)
		}
		m := answer.FindStringSubmatch(a)
		if m == nil {
			return "", nil, fmt.Errorf("an example without its answer: %.60q", p)
		}
		shots = append(shots, shot{input: strings.TrimPrefix(q, "Q: "), reasoning: a, answer: m[1]})
	}
	return strings.Join(paras[:n], "\n\n"), shots, nil
}

// form is one of lm-eval's BBH forms.
type form struct {
	dir       string
	template  *yaml.Node
	aggregate string // the filter its group aggregates
	task      func(name, desc string, shots []shot) *yaml.Node
}

var forms = []form{
	{dir: "zeroshot", aggregate: "flexible-extract", template: template(zeroIgnores, []string{"</s>", "Q:", "<|im_end|>"}, 0, nil, 3),
		task: func(name, desc string, _ []shot) *yaml.Node {
			return taskFile("zeroshot", name, desc, "Q: {{input}}\nA:", nil, "",
				filters(pair("strict-match", seq(fn("take_first"))), pair("flexible-extract", seq(extract(name, 0), fn("take_first")))))
		}},
	{dir: "fewshot", template: template(nil, []string{"</s>", "Q", "\n\n"}, 3, nil, 2),
		task: func(name, desc string, shots []shot) *yaml.Node {
			return taskFile("fewshot", name, desc, "Q: {{input}}\nA:", shots, "answer", nil)
		}},
	{dir: "cot_zeroshot", aggregate: "flexible-extract", template: template(cotIgnores, []string{"</s>", "Q:", "<|im_end|>"}, 0, nil, 3),
		task: func(name, desc string, _ []shot) *yaml.Node {
			return taskFile("cot_zeroshot", name, desc, "Q: {{input}}\nA: Let's think step by step.", nil, "",
				filters(pair("flexible-extract", seq(extract(name, -1), fn("take_first"))),
					pair("strict-match", seq(mapping("function", str("regex"), "regex_pattern", str(cotAnswer)), fn("take_first")))))
		}},
	{dir: "cot_fewshot", aggregate: "get-answer", template: template(nil, []string{"</s>", "Q", "\n\n"}, 3, cotFewshot, 4),
		task: func(name, desc string, shots []shot) *yaml.Node {
			return taskFile("cot_fewshot", name, desc, "Q: {{input}}\nA: Let's think step by step.\n", shots, "reasoning", nil)
		}},
}

// The exact_match options of the zero-shot forms: what both sides lose first.
var (
	zeroIgnores = []string{`\.$`, ",", "\n", `\\`, `"`}
	cotIgnores  = []string{`\.$`, ",", `\\`, "\n", `"`}
)

// cotFewshot is what the few-shot chain-of-thought form's template adds: no target
// delimiter, 1024 tokens, and its answer filter.
func cotFewshot(m *yaml.Node) {
	add(m, "target_delimiter", str(""))
	add(m, "filter_list", filters(pair("get-answer", seq(
		mapping("function", str("regex"), "regex_pattern", str("(?<=the answer is )(.*)(?=.)")), fn("take_first")))))
}

// template is a form's shared settings.
func template(ignores, until []string, shots int, more func(*yaml.Node), version int) *yaml.Node {
	metric := mapping("metric", str("exact_match"), "aggregation", str("mean"), "higher_is_better", lit("true"))
	if ignores != nil {
		add(metric, "ignore_case", lit("true"))
		add(metric, "regexes_to_ignore", strs(ignores...))
	}
	m := mapping("dataset_path", str("SaylorTwift/bbh"), "output_type", str("generate_until"),
		"test_split", str("test"), "doc_to_target", str("{{target}}"))
	if more != nil {
		more(m)
	}
	gen := mapping("until", strs(until...), "do_sample", lit("false"), "temperature", lit("0.0"))
	if more != nil {
		gen = mapping("max_gen_toks", lit("1024"), "until", strs(until...), "do_sample", lit("false"), "temperature", lit("0.0"))
	}
	add(m, "metric_list", seq(metric))
	add(m, "generation_kwargs", gen)
	add(m, "num_fewshot", lit(fmt.Sprint(shots)))
	add(m, "metadata", mapping("version", lit(fmt.Sprintf("%d.0", version))))
	return m
}

// taskFile is one task of a form; shots, when given, are its first_n examples, the
// target being the answer or the whole reasoning.
func taskFile(dir, name, desc, text string, shots []shot, target string, filterList *yaml.Node) *yaml.Node {
	m := mapping("include", str("_template.yaml"), "task", str("bbh_"+dir+"_"+name),
		"dataset_name", str(name), "description", str(desc+"\n\n"), "doc_to_text", str(text))
	if shots != nil {
		samples := seq()
		for _, s := range shots {
			t := s.answer
			if target == "reasoning" {
				t = s.reasoning
			}
			samples.Content = append(samples.Content, mapping("input", str(s.input), "target", str(t)))
		}
		add(m, "fewshot_config", mapping("sampler", str("first_n"), "samples", samples))
	}
	if filterList != nil {
		add(m, "filter_list", filterList)
	}
	return m
}

// extract is the flexible filter lm-eval gives a task in the zero-shot forms.
func extract(name string, group int) *yaml.Node {
	g := lit(fmt.Sprint(group))
	regex := func(p string) *yaml.Node {
		return mapping("function", str("regex"), "group_select", g, "regex_pattern", str(p))
	}
	valued := func(pairs ...string) *yaml.Node {
		v := mapping()
		for i := 0; i < len(pairs); i += 2 {
			add(v, pairs[i], str(pairs[i+1]))
		}
		return mapping("function", function("utils.MapRegexFilter"), "group_select", g, "ignore_case", lit("true"), "regex_pattern_to_value", v)
	}
	switch kinds[name] {
	case "bool":
		return regex(`\b(True|False)\b`)
	case "yesno":
		return regex(`\b(Yes|No|yes|no)\b`)
	case "valid":
		return regex(`\b(valid|invalid)\b`)
	case "dyck":
		return regex(`(?<= )([" \[\(<{}>\)\]]+)|([" \[\(<{}>\)\]]+)`)
	case "number":
		return mapping("function", function("utils.NumberParseRegexFilter"), "group_select", g, "regex_pattern", str("([-0-9]+)"))
	case "plausible":
		return valued(`\b(no|not plausible)\b`, "no", `\b(yes|plausible)\b`, "yes")
	case "truth":
		return valued(`\b(no|does not tell the truth|is not telling the truth)\b`, "no", `\b(yes|tells the truth|is telling the truth)\b`, "yes")
	case "sort":
		return mapping("function", function("utils.WordSortFilter"))
	}
	return mapping("function", function("utils.MultiChoiceRegexFilter"), "group_select", g,
		"ignore_case", lit("true"), "ignore_punctuation", lit("true"), "regex_pattern", str(`(\([A-Z]\))`))
}

// group is a form's group: its tasks, exact_match averaged weighted by size.
func group(name, dir string, tasks []string, filter string) *yaml.Node {
	list := seq()
	for _, t := range tasks {
		list.Content = append(list.Content, str("bbh_"+dir+"_"+t))
	}
	agg := mapping("metric", str("exact_match"), "aggregation", str("mean"), "weight_by_size", lit("true"))
	if filter != "" {
		add(agg, "filter_list", str(filter))
	}
	return mapping("group", str(name), "task", list, "aggregate_metric_list", seq(agg), "metadata", mapping("version", lit("3.0")))
}

func filters(entries ...*yaml.Node) *yaml.Node { return seq(entries...) }

func pair(name string, steps *yaml.Node) *yaml.Node {
	return mapping("name", str(name), "filter", steps)
}

func fn(name string) *yaml.Node { return mapping("function", str(name)) }

func function(name string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!function", Value: name}
}

func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.ContainsAny(s, "\n\\\"'") || s == "" || strings.TrimSpace(s) != s || yaml11Bool[strings.ToLower(s)] {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

// yaml11Bool are words YAML 1.1 (PyYAML, lm-eval's loader) reads as booleans.
var yaml11Bool = map[string]bool{"y": true, "n": true, "yes": true, "no": true, "true": true, "false": true, "on": true, "off": true}

func strs(list ...string) *yaml.Node {
	n := seq()
	for _, s := range list {
		n.Content = append(n.Content, str(s))
	}
	return n
}

func lit(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }

func seq(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Content: items}
}

func mapping(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i < len(kv); i += 2 {
		add(m, kv[i].(string), kv[i+1].(*yaml.Node))
	}
	return m
}

func add(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, str(key), v)
}

const bbhHead = "# Written by go generate (gen/main.go) from BIG-Bench Hard's prompts: edit the generator.\n"

// write writes n as YAML to path, under the comment head.
func write(path string, n *yaml.Node, head string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		log.Fatal(err)
	}
	b, err := yaml.Marshal(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}})
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(path, append([]byte(head), b...), 0o644); err != nil {
		log.Fatal(err)
	}
}
