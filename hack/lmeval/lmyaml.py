import yaml
class L(yaml.SafeLoader): pass
L.add_constructor('!function', lambda l,n: 'FN:'+l.construct_scalar(n))
def load(path):
    import os
    d=yaml.load(open(path),Loader=L)
    if 'include' in d:
        base=load(os.path.join(os.path.dirname(path), d['include']))
        base.update({k:v for k,v in d.items() if k!='include'})
        d=base
    return d


def shim_regex():
    """lm-eval's filters import the regex module, not installable here: re stands in
    (a pattern's branch reset "(?|" read as "(?:", which only lm-eval's BBH
    number filter has)."""
    import re, sys, types
    rx = types.ModuleType('regex'); rx.compile = lambda p: re.compile(p.replace('(?|', '(?:'))
    sys.modules['regex'] = rx

def em(p, r, kw):
    """lm-eval's exact_match (exact_match_hf_evaluate) of one prediction and reference."""
    import re, string
    for s in kw.get('regexes_to_ignore') or []:
        p, r = re.sub(s, '', p), re.sub(s, '', r)
    if kw.get('ignore_case'): p, r = p.lower(), r.lower()
    if kw.get('ignore_punctuation'):
        t = str.maketrans('', '', string.punctuation); p, r = p.translate(t), r.translate(t)
    return p == r


def render(template, doc):
    """A template rendered as lm-eval renders it: Jinja2, undefined names an error, a
    trailing newline kept."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template).render(**doc)

def digest(msgs):
    """The digest evalflow's tests hold of chat messages: role, NUL, content, 0x01, each."""
    import hashlib
    h = hashlib.sha256()
    for m in msgs: h.update((m['role'] + '\0' + m['content'] + '\1').encode())
    return h.hexdigest()
