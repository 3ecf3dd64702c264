# Reference: lm-eval's truthfulqa_gen requests (its YAML, Jinja2 in lm-eval's
# environment, its process_docs_gen run as it is) on TruthfulQA.csv's rows, the answers
# ";"-separated and stripped as the hub's truthful_qa has them.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/gen_ref.py runner/task/tasks/testdata/lmeval_truthfulqa_gen.json
import os, sys, json, hashlib, csv, ast
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
LMEVAL = os.environ['LMEVAL']  # a checkout of EleutherAI/lm-evaluation-harness
SHARED = os.environ.get('SHARED', '../shared')
from lmyaml import load
import jinja2
env = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
# lm-eval's preprocess_function, taken from its utils.py as it is (the module imports
# packages not installable here)
src = open(LMEVAL + '/lm_eval/tasks/truthfulqa/utils.py').read()
fn = [n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == 'preprocess_function'][0]
ns = {}; exec(compile(ast.Module(body=[fn], type_ignores=[]), 'utils.py', 'exec'), ns)
c = load(LMEVAL + '/lm_eval/tasks/truthfulqa/truthfulqa_gen.yaml')
rows = []
with open(SHARED + '/datasets/truthfulqa/TruthfulQA.csv', newline='') as f:
    for r in list(csv.reader(f))[1:]:
        split = lambda s: [a.strip() for a in s.split(';') if a.strip()]
        rows.append({'question': r[2].strip(), 'best_answer': r[3].strip(), 'correct_answers': split(r[4]), 'incorrect_answers': split(r[5])})
res = {}
for i in (0, 1, len(rows) - 1):
    doc = dict(rows[i]); doc.update(ns['preprocess_function'](rows[i]))
    ctx = env.from_string(c['doc_to_text']).render(**doc)
    res[str(i)] = {'context': hashlib.sha256(ctx.encode()).hexdigest(), 'correct': doc['correct_answers'], 'incorrect': doc['incorrect_answers']}
json.dump({'docs': res, 'size': len(rows), 'until': [c.get('fewshot_delimiter', '\n\n')]}, open(sys.argv[1], 'w'), indent=1, sort_keys=True, ensure_ascii=False)
