# Reference: lm-eval's winogrande requests (its preprocess_winogrande.py run as it is)
# on WinoGrande's dev set: each choice's context and the continuation after it.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/winogrande_ref.py runner/task/tasks/testdata/lmeval_winogrande.json
import os, sys, json, hashlib, importlib.util
LMEVAL = os.environ['LMEVAL']  # a checkout of EleutherAI/lm-evaluation-harness
SHARED = os.environ.get('SHARED', '../shared')
spec = importlib.util.spec_from_file_location('p', LMEVAL + '/lm_eval/tasks/winogrande/preprocess_winogrande.py')
p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p)
rows = [json.loads(l) for l in open(SHARED + '/datasets/winogrande/dev.jsonl') if l.strip()]
res = {}
for i in (0, 1, 100, len(rows) - 1):
    doc = rows[i]
    ctxs = p.doc_to_choice(doc)  # multiple input: the choices are the contexts
    cont = ' ' + p.doc_to_target(doc)  # target_delimiter, then the target
    res[str(i)] = {'contexts': hashlib.sha256('\0'.join(ctxs).encode()).hexdigest(), 'continuation': cont, 'gold': p.doc_to_text(doc)}
json.dump({'docs': res, 'size': len(rows)}, open(sys.argv[1], 'w'), indent=1, sort_keys=True, ensure_ascii=False)
