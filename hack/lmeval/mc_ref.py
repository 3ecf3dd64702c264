# Reference: lm-eval's truthfulqa_mc1/mc2 requests (its YAML, Jinja2 in lm-eval's
# environment) on the rows the hub's truthful_qa builds from mc_task.json.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/mc_ref.py runner/task/tasks/testdata/lmeval_truthfulqa.json
import os, sys, json, hashlib
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
LMEVAL = os.environ['LMEVAL']  # a checkout of EleutherAI/lm-evaluation-harness
SHARED = os.environ.get('SHARED', '../shared')
from lmyaml import load
import jinja2
env = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
raw = json.load(open(SHARED + '/datasets/truthfulqa/mc_task.json'))
rows = [{'question': r['question'],
         'mc1_targets': {'choices': list(r['mc1_targets']), 'labels': list(r['mc1_targets'].values())},
         'mc2_targets': {'choices': list(r['mc2_targets']), 'labels': list(r['mc2_targets'].values())}} for r in raw]
out = {}
for task in ['truthfulqa_mc1', 'truthfulqa_mc2']:
    c = load(LMEVAL + f'/lm_eval/tasks/truthfulqa/{task}.yaml')
    res = {}
    for i in (0, 1, len(rows) - 1):
        doc = rows[i]
        ctx = env.from_string(c['doc_to_text']).render(**doc)
        choices = eval(env.from_string(c['doc_to_choice']).render(**doc))  # lm-eval reads it with ast.literal_eval
        conts = [c.get('target_delimiter', ' ') + ch for ch in choices]
        res[str(i)] = {'context': hashlib.sha256(ctx.encode()).hexdigest(),
                       'continuations': hashlib.sha256('\0'.join(conts).encode()).hexdigest(),
                       'n': len(conts), 'gold': c['doc_to_target']}
        if i == 0: res[str(i)]['context_is'] = ctx
    out[task] = {'docs': res, 'size': len(rows)}
json.dump(out, open(sys.argv[1], 'w'), indent=1, sort_keys=True, ensure_ascii=False)
