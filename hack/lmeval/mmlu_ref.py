# Reference: lm-eval's MMLU requests (mmlu_<subject>, multiple choice; and
# mmlu_<subject>_generative) for a few subjects, 0- and 5-shot: its YAML in $LMEVAL, its
# first_n sampler and fewshot_context logic, Jinja2 in lm-eval's environment, on the
# rows the hub's cais/mmlu has (../shared's CSV release: question, choices, answer's
# index); and what its get_response filter (RegexFilter, WhitespaceFilter,
# TakeFirstFilter, run as they are) and exact_match make of responses.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/mmlu_ref.py runner/task/tasks/testdata/lmeval_mmlu.json
import os, sys, csv, json, hashlib
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lmyaml import load, shim_regex, em, render, digest
LMEVAL = os.environ['LMEVAL']
SHARED = os.environ.get('SHARED', '../shared')
shim_regex()
sys.path.insert(0, LMEVAL)
from lm_eval.filters.extraction import RegexFilter, WhitespaceFilter
from lm_eval.filters.selection import TakeFirstFilter

def rows(subject, split):
    d = {'test': 'test', 'dev': 'dev'}[split]
    with open(f'{SHARED}/datasets/mmlu/{d}/{subject}_{d}.csv', newline='') as f:
        return [{'question': r[0], 'subject': subject, 'choices': r[1:5], 'answer': 'ABCD'.index(r[5].strip())} for r in csv.reader(f)]

def sha(s): return hashlib.sha256(s.encode()).hexdigest()
out, filters = {}, []
for subject in ['abstract_algebra', 'anatomy', 'high_school_european_history', 'professional_law', 'world_religions']:
    test, dev = rows(subject, 'test'), rows(subject, 'dev')
    for form, name in [('default', f'mmlu_{subject}'), ('generative', f'mmlu_{subject}_generative')]:
        c = load(f'{LMEVAL}/lm_eval/tasks/mmlu/{form}/mmlu_{subject}.yaml')
        tgt, few = c.get('target_delimiter', ' '), c.get('fewshot_delimiter', '\n\n')
        def target(doc):
            t = render(c['doc_to_target'], doc) if '{{' in c['doc_to_target'] else doc[c['doc_to_target']]
            return c['doc_to_choice'][t] if form == 'default' else t
        for shots in (0, 5):
            res = {}
            for i in sorted({0, 1, len(test) - 1}):
                doc = test[i]
                msgs = [('system', c['description'], '')]
                for ex in dev[:shots]:
                    msgs += [('user', render(c['doc_to_text'], ex), tgt), ('assistant', target(ex), few)]
                msgs.append(('user', render(c['doc_to_text'], doc), ''))
                text = ''.join(m[1] + m[2] for m in msgs)
                if form == 'default':
                    conts = [tgt + ch for ch in c['doc_to_choice']]
                    res[str(i)] = {'context': sha(text), 'continuations': sha('\0'.join(conts)), 'n': 4, 'gold': doc['answer']}
                    continue
                multi = [{'role': r, 'content': t} for r, t, _ in msgs]
                rest = msgs[1:]
                single = multi[:1] + [{'role': 'user', 'content': ''.join(m[1] + (m[2] if k < len(rest) - 1 else '') for k, m in enumerate(rest))}]
                res[str(i)] = {'text': sha(text), 'multiturn': digest(multi), 'singleturn': digest(single), 'target': target(doc)}
            entry = {'docs': res, 'size': len(test), 'shots': shots}
            if form == 'generative':
                g = c['generation_kwargs']
                entry.update(until=g['until'], max_gen_toks=g.get('max_gen_toks', 256))
            out[f'{name}@{shots}'] = entry
        if form == 'generative':
            metric = {k: v for k, v in c['metric_list'][0].items() if k in ('regexes_to_ignore', 'ignore_case', 'ignore_punctuation')}
            for di in (0, 1):
                doc = test[di]; tg = target(doc); wrong = 'A' if tg != 'A' else 'B'
                for resp in [tg, ' ' + tg, tg + '.', tg.lower(), f'{tg}\n{wrong}', f'  {tg}  \n', f'({tg})', f'The answer is {tg}',
                             '', '\n' + tg, f'{tg}) because', f'\x1c{tg}\u3000', f'{wrong}. {tg}', f'{tg}\t\n\nmore', f'"{tg}"']:
                    rs = [[resp]]
                    for st in c['filter_list'][0]['filter']:
                        kw = {k: v for k, v in st.items() if k != 'function'}
                        flt = {'regex': lambda: RegexFilter(**kw), 'remove_whitespace': WhitespaceFilter, 'take_first': TakeFirstFilter}[st['function']]()
                        rs = list(flt.apply(rs, [doc]))
                    x = rs[0] if isinstance(rs[0], str) else rs[0][0]
                    filters.append({'task': name, 'doc': di, 'response': resp, 'filters': {'get_response': [x, bool(em(x, tg, metric))]}})
out['filters'] = filters
json.dump(out, open(sys.argv[1], 'w'), indent=1, sort_keys=True, ensure_ascii=False)
print(len(out) - 1, len(filters))
