# Reference: lm-eval's BBH requests (its YAML in $LMEVAL, its fewshot_context and
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/bbh_ref.py runner/task/tasks/testdata/lmeval_bbh.json
# build_qa_turn logic, Jinja2 in lm-eval's environment) on ../shared's BBH data.
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
LMEVAL = os.environ['LMEVAL']  # a checkout of EleutherAI/lm-evaluation-harness
SHARED = os.environ.get('SHARED', '../shared')

import sys, json, glob, os, hashlib
from lmyaml import load, render, digest
out = {}
for form in ['zeroshot', 'fewshot', 'cot_zeroshot', 'cot_fewshot']:
    for f in sorted(glob.glob(LMEVAL + f'/lm_eval/tasks/bbh/{form}/*.yaml')):
        if os.path.basename(f).startswith('_'): continue
        c = load(f)
        docs = json.load(open(SHARED + f'/datasets/bbh/{c["dataset_name"]}.json'))['examples']
        tgt = c.get('target_delimiter', ' '); few = c.get('fewshot_delimiter', '\n\n')
        n = c.get('num_fewshot', 0)
        samples = c.get('fewshot_config', {}).get('samples', [])[:n]
        res = {}
        for i in sorted({0, 1, len(docs) - 1}):
            doc = docs[i]
            msgs = []  # (role, content, delimiter)
            if c['description']: msgs.append(('system', c['description'], ''))
            for s in samples:
                q, a = render(c['doc_to_text'], s), render(c['doc_to_target'], s)
                has = a is not None and a != ''
                msgs.append(('user', q, tgt if has else ''))
                if has: msgs.append(('assistant', a, few))
            msgs.append(('user', render(c['doc_to_text'], doc), ''))
            text = ''.join(m[1] + m[2] for m in msgs)
            multi = [{'role': r, 'content': t} for r, t, _ in msgs]
            sysm = [m for m in multi[:1] if m['role'] == 'system']
            rest = msgs[len(sysm):]
            single = sysm + [{'role': 'user', 'content': ''.join(m[1] + (m[2] if k < len(rest) - 1 else '') for k, m in enumerate(rest))}]
            res[str(i)] = {'text': hashlib.sha256(text.encode()).hexdigest(), 'multiturn': digest(multi),
                           'singleturn': digest(single), 'target': render(c['doc_to_target'], doc)}
            if i == 0 and c['task'].endswith('_snarks'): res[str(i)]['text_is'] = text
        g = c['generation_kwargs']
        out[c['task']] = {'docs': res, 'until': g['until'], 'max_gen_toks': g.get('max_gen_toks', 256), 'size': len(docs)}
json.dump(out, open(sys.argv[1], 'w'), indent=1, sort_keys=True, ensure_ascii=False)
print(len(out))
