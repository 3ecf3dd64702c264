package main

import (
	"log"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// categories are lm-eval's four MMLU categories, each subject's.
var categories = map[string]string{
	"abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem", "business_ethics": "other",
	"clinical_knowledge": "other", "college_biology": "stem", "college_chemistry": "stem",
	"college_computer_science": "stem", "college_mathematics": "stem", "college_medicine": "other",
	"college_physics": "stem", "computer_security": "stem", "conceptual_physics": "stem",
	"econometrics": "social_sciences", "electrical_engineering": "stem", "elementary_mathematics": "stem",
	"formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
	"high_school_chemistry": "stem", "high_school_computer_science": "stem",
	"high_school_european_history": "humanities", "high_school_geography": "social_sciences",
	"high_school_government_and_politics": "social_sciences", "high_school_macroeconomics": "social_sciences",
	"high_school_mathematics": "stem", "high_school_microeconomics": "social_sciences",
	"high_school_physics": "stem", "high_school_psychology": "social_sciences",
	"high_school_statistics": "stem", "high_school_us_history": "humanities",
	"high_school_world_history": "humanities", "human_aging": "other", "human_sexuality": "social_sciences",
	"international_law": "humanities", "jurisprudence": "humanities", "logical_fallacies": "humanities",
	"machine_learning": "stem", "management": "other", "marketing": "other", "medical_genetics": "other",
	"miscellaneous": "other", "moral_disputes": "humanities", "moral_scenarios": "humanities",
	"nutrition": "other", "philosophy": "humanities", "prehistory": "humanities",
	"professional_accounting": "other", "professional_law": "humanities", "professional_medicine": "other",
	"professional_psychology": "social_sciences", "public_relations": "social_sciences",
	"security_studies": "social_sciences", "sociology": "social_sciences", "us_foreign_policy": "social_sciences",
	"virology": "other", "world_religions": "humanities",
}

// categoryOrder is the order lm-eval's mmlu group lists its categories in.
var categoryOrder = []string{"stem", "other", "social_sciences", "humanities"}

const mmluHead = "# Written by go generate (gen/mmlu.go) for each subject of MMLU: edit the generator.\n"

// question is MMLU's prompt: the question, its four options lettered, "Answer:".
const question = "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"

// mmlu writes MMLU's task files into out, as lm-eval's: default/ (mmlu, 0-shot
// multiple choice by default, its examples the dev split's first, a group for each
// category and one of them) and generative/ (mmlu_generative, the letter generated
// and read from the answer's first line).
func mmlu(shared, out string) {
	files, err := filepath.Glob(filepath.Join(shared, "datasets", "mmlu", "test", "*_test.csv"))
	if err != nil || len(files) == 0 {
		log.Fatalf("no MMLU subjects in %s: %v", shared, err)
	}
	var subjects []string
	for _, f := range files {
		s := strings.TrimSuffix(filepath.Base(f), "_test.csv")
		if categories[s] == "" {
			log.Fatalf("MMLU subject %s has no category", s)
		}
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)

	def, gen := filepath.Join(out, "default"), filepath.Join(out, "generative")
	write(filepath.Join(def, "_template.yaml"), mmluTemplate("multiple_choice", "answer", nil,
		seq(mapping("metric", str("acc"), "aggregation", str("mean"), "higher_is_better", lit("true"))), nil, "1.0"), mmluHead)
	write(filepath.Join(gen, "_template.yaml"), mmluTemplate("generate_until", "{{['A', 'B', 'C', 'D'][answer]}}",
		mapping("until", strs("</s>", "\n")),
		seq(mapping("metric", str("exact_match"), "aggregation", str("mean"), "higher_is_better", lit("true"),
			"ignore_punctuation", lit("true"), "ignore_case", lit("true"))),
		filters(pair("get_response", seq(
			mapping("function", str("regex"), "regex_pattern", str(`^(.*?)(?=\n|$)`)),
			fn("remove_whitespace"),
			mapping("function", str("regex"), "regex_pattern", str(`^(.*?)\s*$`)),
			fn("take_first")))), "3.0"), mmluHead)

	var categoryGroups, inline []*yaml.Node
	for _, cat := range categoryOrder {
		alias := strings.ReplaceAll(cat, "_", " ")
		acc := seq(mapping("metric", str("acc"), "weight_by_size", lit("True")))
		write(filepath.Join(def, "_mmlu_"+cat+".yaml"), mapping("group", str("mmlu_"+cat), "group_alias", str(alias),
			"task", strs("mmlu_"+cat+"_tasks"), "aggregate_metric_list", acc, "metadata", mapping("version", lit("2"))), mmluHead)
		categoryGroups = append(categoryGroups, str("mmlu_"+cat))
		inline = append(inline, mapping("group", str(alias), "task", strs("mmlu_"+cat+"_generative"),
			"aggregate_metric_list", seq(getResponse(false))))
	}
	write(filepath.Join(def, "_mmlu.yaml"), mapping("group", str("mmlu"), "task", seq(categoryGroups...),
		"aggregate_metric_list", seq(mapping("metric", str("acc"), "weight_by_size", lit("True"))),
		"metadata", mapping("version", lit("2"))), mmluHead)
	write(filepath.Join(gen, "_mmlu.yaml"), mapping("group", str("mmlu_generative"), "group_alias", str("mmlu (generative)"),
		"task", seq(inline...), "aggregate_metric_list", seq(getResponse(true)), "metadata", mapping("version", lit("3"))), mmluHead)

	for _, s := range subjects {
		cat := categories[s]
		desc := "The following are multiple choice questions (with answers) about " + strings.ReplaceAll(s, "_", " ") + ".\n\n"
		write(filepath.Join(def, "mmlu_"+s+".yaml"), mapping("dataset_name", str(s), "description", str(desc),
			"tag", str("mmlu_"+cat+"_tasks"), "include", str("_template.yaml"), "task", str("mmlu_"+s), "task_alias", str(s)), mmluHead)
		write(filepath.Join(gen, "mmlu_"+s+".yaml"), mapping("dataset_name", str(s), "description", str(desc),
			"tag", str("mmlu_"+cat+"_generative"), "include", str("_template.yaml"), "task", str("mmlu_"+s+"_generative"),
			"task_alias", str(s)), mmluHead)
	}
}

// mmluTemplate is what each subject's file of a form includes.
func mmluTemplate(outputType, target string, generation, metrics, filterList *yaml.Node, version string) *yaml.Node {
	m := mapping("dataset_path", str("cais/mmlu"), "test_split", str("test"), "fewshot_split", str("dev"),
		"fewshot_config", mapping("sampler", str("first_n")), "output_type", str(outputType),
		"doc_to_text", str(question))
	if outputType == "multiple_choice" {
		add(m, "doc_to_choice", &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, Content: strs("A", "B", "C", "D").Content})
	}
	add(m, "doc_to_target", str(target))
	if generation != nil {
		add(m, "generation_kwargs", generation)
	}
	add(m, "metric_list", metrics)
	if filterList != nil {
		add(m, "filter_list", filterList)
	}
	add(m, "metadata", mapping("version", lit(version)))
	return m
}

// getResponse is mmlu_generative's aggregate: exact_match under get_response, weighted
// by size (its own list also names the aggregation).
func getResponse(withAggregation bool) *yaml.Node {
	m := mapping()
	if withAggregation {
		add(m, "aggregation", str("mean"))
	}
	add(m, "metric", str("exact_match"))
	add(m, "weight_by_size", lit("true"))
	add(m, "filter_list", str("get_response"))
	return m
}
