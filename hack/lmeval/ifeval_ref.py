# Reference: what lm-eval's IFEval checkers (its instructions.py, instructions_util.py
# and utils.py, run as they are) say of responses to ../shared's 541 prompts, strictly
# and loosely, each instruction; and, for the checkers that lean on Python models,
# what those models say of the prompts themselves: nltk's punkt sentence count and
# word_tokenize's capital words (punkt's English parameters as
# github.com/neurosnap/sentences ships them: the pickle nltk downloads is not
# reachable here), and langdetect's language (seeded, so the file is reproducible:
# lm-eval does not seed it).
# Needs Debian's python3-nltk and python3-langdetect (apt-get install), so run it with
# /usr/bin/python3.
# Run: LMEVAL=<lm-eval checkout> SHARED=../shared PUNKT=<neurosnap/sentences>/data/english.json \
#   /usr/bin/python3 hack/lmeval/ifeval_ref.py runner/task/ifeval/testdata/lmeval_ifeval.json.gz
import os, sys, json, gzip, types, importlib.util, importlib.metadata, collections
LMEVAL, SHARED, PUNKT = os.environ['LMEVAL'], os.environ.get('SHARED', '../shared'), os.environ['PUNKT']

# What lm-eval's modules import at load that is not here: immutabledict (a dict does),
# nltk >= 3.9.1 (Debian's 3.8 has the same tokenizers) and its punkt download.
sys.modules['immutabledict'] = types.SimpleNamespace(immutabledict=dict)
real_version = importlib.metadata.version
importlib.metadata.version = lambda name: '3.9.1' if name == 'nltk' else real_version(name)
import nltk
nltk.download = lambda *a, **k: True
nltk.data.find = lambda *a, **k: True
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
raw = json.load(open(PUNKT))
params = PunktParameters()
params.abbrev_types = set(raw['AbbrevTypes'])
params.collocations = {tuple(k.split(',', 1)) for k in raw['Collocations']}
params.sent_starters = set(raw['SentStarters'])
params.ortho_context = collections.defaultdict(int, raw['OrthoContext'])
punkt = PunktSentenceTokenizer(params)
nltk.tokenize.sent_tokenize = lambda text, language='english': punkt.tokenize(text)
import langdetect
langdetect.DetectorFactory.seed = 0

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m
pkg = types.ModuleType('lm_eval.tasks.ifeval'); pkg.__path__ = []
for n in ['lm_eval', 'lm_eval.tasks']:
    sys.modules[n] = types.ModuleType(n); sys.modules[n].__path__ = []
sys.modules['lm_eval.tasks.ifeval'] = pkg
d = LMEVAL + '/lm_eval/tasks/ifeval/'
util = load('lm_eval.tasks.ifeval.instructions_util', d + 'instructions_util.py')
util._get_sentence_tokenizer = lambda: punkt
pkg.instructions_util = util
pkg.instructions = load('lm_eval.tasks.ifeval.instructions', d + 'instructions.py')
pkg.instructions_registry = load('lm_eval.tasks.ifeval.instructions_registry', d + 'instructions_registry.py')
utils = load('lm_eval.tasks.ifeval.utils', d + 'utils.py')

docs = [json.loads(l) for l in open(SHARED + '/datasets/ifeval/input_data.jsonl')]

def responses(doc):
    """Responses that follow and break a prompt's instructions: the prompt itself, its
    case changed, wrapped in JSON, quotes or a title, and one built to follow each
    instruction as it reads."""
    p = doc['prompt']
    out = [p, p.upper(), p.lower(), '```json\n' + json.dumps({'answer': p}) + '\n```', '"' + p + '"',
           '<<A Title>>\n\n' + p + '\n\nP.S. thanks', 'Sure!\n' + p.replace(',', '') + '\nAny other questions?']
    parts, tail = [], []
    for iid, kw in zip(doc['instruction_id_list'], doc['kwargs']):
        kw = {k: v for k, v in kw.items() if v}
        if iid == 'keywords:existence': parts.append(' '.join(kw['keywords']) + '.')
        elif iid == 'keywords:frequency': parts.append((' ' + kw['keyword']) * kw['frequency'] + '.')
        elif iid == 'keywords:letter_frequency': parts.append(kw['letter'] * kw['let_frequency'])
        elif iid == 'detectable_content:number_placeholders': parts.append(' '.join('[place %d]' % i for i in range(kw['num_placeholders'])))
        elif iid == 'detectable_format:number_bullet_lists': parts.append('\n'.join('* point %d' % i for i in range(kw['num_bullets'])))
        elif iid == 'detectable_format:number_highlighted_sections': parts.append(' '.join('*part %d*' % i for i in range(kw['num_highlights'])))
        elif iid == 'detectable_format:multiple_sections': parts.append('\n'.join('%s %d\ntext.' % (kw['section_spliter'], i + 1) for i in range(kw['num_sections'])))
        elif iid == 'length_constraints:number_paragraphs': parts.append('\n***\n'.join('Paragraph %d.' % i for i in range(kw['num_paragraphs'])))
        elif iid == 'length_constraints:nth_paragraph_first_word':
            parts.append('\n\n'.join((kw['first_word'].capitalize() + ' is here.') if i + 1 == kw['nth_paragraph'] else 'Some text.' for i in range(kw['num_paragraphs'])))
        elif iid == 'length_constraints:number_words': parts.append(' '.join(['word'] * kw['num_words']))
        elif iid == 'length_constraints:number_sentences': parts.append(' '.join(['It is so.'] * kw['num_sentences']))
        elif iid == 'change_case:capital_word_frequency': parts.append(' '.join(['LOUD'] * kw['capital_frequency']))
        elif iid == 'detectable_content:postscript': tail.append(kw['postscript_marker'] + ' see you')
        elif iid == 'startend:end_checker': tail.append(kw['end_phrase'])
        elif iid == 'combination:repeat_prompt': parts.insert(0, kw['prompt_to_repeat'])
        elif iid == 'detectable_format:constrained_response': parts.append('My answer is yes.')
        elif iid == 'combination:two_responses': parts.append('first answer\n******\nsecond answer')
        elif iid == 'detectable_format:title': parts.insert(0, '<<Title>>')
    built = '\n\n'.join(parts + tail)
    out += [built, built.upper(), built.lower(), '"' + built + '"', '*' + built + '*\nBye', '']
    return out

cases, follows = [], collections.Counter()
for doc in docs:
    inp = utils.InputExample(key=doc['key'], instruction_id_list=doc['instruction_id_list'], prompt=doc['prompt'], kwargs=doc['kwargs'])
    for r in responses(doc):
        s, l = utils.test_instruction_following_strict(inp, r), utils.test_instruction_following_loose(inp, r)
        cases.append({'key': doc['key'], 'response': r, 'strict': s.follow_instruction_list, 'loose': l.follow_instruction_list})
        for iid, f in zip(doc['instruction_id_list'], s.follow_instruction_list):
            follows[(iid, f)] += 1
models = []
for doc in docs:
    p = doc['prompt']
    try: lang = langdetect.detect(p)
    except langdetect.LangDetectException: lang = ''
    models.append({'key': doc['key'], 'sentences': util.count_sentences(p), 'words': util.count_words(p),
                   'capital_words': sum(1 for w in nltk.word_tokenize(p) if w.isupper()),
                   'capital_words_upper': sum(1 for w in nltk.word_tokenize(p.upper()) if w.isupper()),
                   'language': lang})
with gzip.GzipFile(sys.argv[1], 'wb', mtime=0) as f:
    f.write(json.dumps({'cases': cases, 'models': models}, ensure_ascii=False).encode())
print(len(cases), 'cases;', 'instructions never followed:', sorted({i for (i, f) in follows if f} ^ {i for (i, f) in follows}))
