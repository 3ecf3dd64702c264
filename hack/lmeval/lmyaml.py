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
