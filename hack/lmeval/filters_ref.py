# Reference: lm-eval's BBH filters (its utils.py and RegexFilter/TakeFirstFilter, run as
# they are) and exact_match on responses to real BBH documents.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/filters_ref.py runner/task/tasks/testdata/lmeval_bbh_filters.json
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
LMEVAL = os.environ['LMEVAL']  # a checkout of EleutherAI/lm-evaluation-harness
SHARED = os.environ.get('SHARED', '../shared')

import sys, json, re, types, importlib.util
sys.path.insert(0, LMEVAL)
from lmyaml import load, shim_regex, em
shim_regex()
w2n = types.ModuleType('word2number'); w2n.w2n = types.SimpleNamespace(word_to_num=lambda s: (_ for _ in ()).throw(RuntimeError('no w2n here')))
sys.modules['word2number'] = w2n; sys.modules['word2number.w2n'] = w2n.w2n
from lm_eval.filters.extraction import RegexFilter
from lm_eval.filters.selection import TakeFirstFilter
def module(form):
    spec = importlib.util.spec_from_file_location('u'+form, LMEVAL + f'/lm_eval/tasks/bbh/{form}/utils.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
out = []
for form in ['zeroshot', 'cot_zeroshot']:
    u = module(form)
    import glob, os
    for f in sorted(glob.glob(LMEVAL + f'/lm_eval/tasks/bbh/{form}/*.yaml')):
        if os.path.basename(f).startswith('_'): continue
        c = load(f)
        docs = json.load(open(SHARED + f'/datasets/bbh/{c["dataset_name"]}.json'))['examples']
        metric = {k: v for k, v in c['metric_list'][0].items() if k in ('regexes_to_ignore', 'ignore_case', 'ignore_punctuation')}
        for di in (0, 7):
            doc = docs[di]; tg = doc['target']
            opts = dict(re.findall(r'\(([A-Z])\) ?([^\n]*)', doc['input']))
            letter = tg.strip('()') if re.fullmatch(r'\([A-Z]\)', tg) else None
            wrong = '(A)' if tg != '(A)' else '(B)'
            resps = [tg, f'The answer is {tg}.', f'So the answer is {tg.lower()}.', 'I am not sure.',
                     f'{wrong} at first, but the answer is {tg}.', f'"{tg}".', f'It is {tg}, not {wrong}.',
                     'There are seven apples.' if 'number' not in f else 'seven']
            if letter:
                resps += [f'It must be {opts.get(letter, "")}.', f'Answer: {letter}', f'answer:{letter}']
            if 'sports' in f or 'web_of_lies' in f:
                resps += ['That is not plausible.', 'plausible', 'Ka tells the truth.', 'So he does not tell the truth.']
            if 'word_sorting' in f:
                words = doc['input'].split('List:')[1].split()
                resps += [' '.join(sorted(words)), ' '.join(sorted(words)) + ' ' + words[0], 'none']
            for resp in resps:
                if 'number' in f and not re.search(r'[-0-9]', resp):
                    continue  # word2number is not here: its path is tested apart
                got = {}
                for fl in c['filter_list']:
                    rs = [[resp]]
                    for st in fl['filter']:
                        kw = {k: v for k, v in st.items() if k != 'function'}
                        fn = st['function']
                        if fn.startswith('FN:'): flt = getattr(u, fn[len('FN:utils.'):])(**kw)
                        elif fn == 'regex': flt = RegexFilter(**kw)
                        elif fn == 'take_first': flt = TakeFirstFilter()
                        rs = flt.apply(rs, [doc])
                        rs = list(rs)
                    x = rs[0] if isinstance(rs[0], str) else rs[0][0]
                    got[fl['name']] = [x, em(x, tg, metric)]
                out.append({'task': c['task'], 'doc': di, 'response': resp, 'filters': got})
json.dump(out, open(sys.argv[1], 'w'), indent=0, ensure_ascii=False)
print(len(out))
