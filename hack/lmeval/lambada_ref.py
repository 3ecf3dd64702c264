# Reference: lm-eval's lambada_openai requests (its YAML, Jinja2 in lm-eval's
# environment) on OpenAI's LAMBADA: each passage's context and continuation.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared python3 hack/lmeval/lambada_ref.py runner/task/tasks/testdata/lmeval_lambada.json
import os, sys, json, hashlib
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
LMEVAL = os.environ['LMEVAL']  # a checkout of EleutherAI/lm-evaluation-harness
SHARED = os.environ.get('SHARED', '../shared')
from lmyaml import load
import jinja2
env = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
c = load(LMEVAL + '/lm_eval/tasks/lambada/lambada_openai.yaml')
rows = [json.loads(l) for l in open(SHARED + '/datasets/lambada/lambada_test.jsonl') if l.strip()]
ctx, cont = hashlib.sha256(), hashlib.sha256()
first = {}
for i, doc in enumerate(rows):
    a, b = env.from_string(c['doc_to_text']).render(**doc), env.from_string(c['doc_to_target']).render(**doc)
    ctx.update((a + '\0').encode()); cont.update((b + '\0').encode())
    if i < 2: first[str(i)] = {'context': a, 'continuation': b}
json.dump({'size': len(rows), 'contexts': ctx.hexdigest(), 'continuations': cont.hexdigest(), 'first': first},
          open(sys.argv[1], 'w'), indent=1, sort_keys=True, ensure_ascii=False)
