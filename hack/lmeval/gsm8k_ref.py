# Reference: lm-eval's GSM8K requests (gsm8k, gsm8k_cot, gsm8k_cot_zeroshot): its YAML
# in $LMEVAL, its default sampler (random.Random(1234).sample of the few-shot split, one
# draw a document in order) or first_n, its fewshot_context logic, Jinja2 in lm-eval's
# environment, on ../shared's GSM8K.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/gsm8k_ref.py runner/task/tasks/testdata/lmeval_gsm8k.json
import os, sys, json, hashlib, random
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lmyaml import load, shim_regex, em, render, digest
shim_regex()
sys.path.insert(0, os.environ['LMEVAL'])
from lm_eval.filters.extraction import RegexFilter
from lm_eval.filters.selection import TakeFirstFilter
LMEVAL = os.environ['LMEVAL']
SHARED = os.environ.get('SHARED', '../shared')
def split(name): return [json.loads(l) for l in open(f'{SHARED}/datasets/gsm8k/{name}.jsonl')]
test, train = split('test'), split('train')
out = {}
for f in ['gsm8k.yaml', 'gsm8k-cot.yaml', 'gsm8k-cot-zeroshot.yaml']:
    c = load(f'{LMEVAL}/lm_eval/tasks/gsm8k/{f}')
    n = c['num_fewshot']; tgt, few = c.get('target_delimiter', ' '), c.get('fewshot_delimiter', '\n\n')
    fc = c.get('fewshot_config', {})
    rnd = random.Random(1234)
    want = {0, 1, len(test) - 1}
    res = {}
    for i, doc in enumerate(test):
        if n == 0: examples = []
        elif fc.get('sampler') == 'first_n': examples = fc['samples'][:n]
        else: examples = rnd.sample(train, n)  # the pool is train, not the scored split: no doc removed
        if i not in want: continue
        msgs = []
        for s in examples:
            msgs.append(('user', render(c['doc_to_text'], s), tgt))
            msgs.append(('assistant', render(c['doc_to_target'], s), few))
        msgs.append(('user', render(c['doc_to_text'], doc), ''))
        text = ''.join(m[1] + m[2] for m in msgs)
        multi = [{'role': r, 'content': t} for r, t, _ in msgs]
        single = [{'role': 'user', 'content': text}]
        res[str(i)] = {'text': hashlib.sha256(text.encode()).hexdigest(), 'multiturn': digest(multi),
                       'singleturn': digest(single), 'target': render(c['doc_to_target'], doc)}
    g = c['generation_kwargs']
    out[c['task']] = {'docs': res, 'until': g['until'], 'max_gen_toks': g.get('max_gen_toks', 256), 'size': len(test)}
# What lm-eval's filters (RegexFilter, TakeFirstFilter, run as they are) extract from
# responses to documents 0 and 1 of each task, and whether exact_match takes it.
filters = []
for f in ['gsm8k.yaml', 'gsm8k-cot.yaml', 'gsm8k-cot-zeroshot.yaml']:
    c = load(f'{LMEVAL}/lm_eval/tasks/gsm8k/{f}')
    metric = {k: v for k, v in c['metric_list'][0].items() if k in ('regexes_to_ignore', 'ignore_case', 'ignore_punctuation')}
    for di in (0, 1):
        doc = test[di]; tg = render(c['doc_to_target'], doc); n = tg.split('####')[-1].strip()
        resps = [doc['answer'], f'#### {n}', f'#### {n} dollars, or {int(n) + 2}', f'The answer is {n}.',
                 f'The answer is {n}', f'She pays ${n}. The answer is ${n}.', f'So {n},000 + 234 = {n},234. The answer is {n},234.',
                 f'The answer is -{n} apples.', f'I think 12 then {n}', 'no numbers at all', f'{n}.00', f'$ {n}', f'Answer: {n}.\n\nQuestion: and',
                 f'It is {n}.', f'#### {n}.', f'#### ${n}']
        for resp in resps:
            got = {}
            for fl in c['filter_list']:
                rs = [[resp]]
                for st in fl['filter']:
                    kw = {k: v for k, v in st.items() if k != 'function'}
                    flt = RegexFilter(**kw) if st['function'] == 'regex' else TakeFirstFilter()
                    rs = list(flt.apply(rs, [doc]))
                x = rs[0] if isinstance(rs[0], str) else rs[0][0]
                got[fl['name']] = [x, bool(em(x, tg, metric))]
            filters.append({'task': c['task'], 'doc': di, 'response': resp, 'filters': got})
out['filters'] = filters
json.dump(out, open(sys.argv[1], 'w'), indent=1, sort_keys=True, ensure_ascii=False)
print(len(out))
