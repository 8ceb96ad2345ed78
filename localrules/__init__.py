__version__ = "0.1.0"

# Hand-written (nbdev writes only `__version__` here). What a user needs, from the package's top, imported on first
# use (PEP 562), so that `import localrules` and the command line stay fast (a bad parameter is refused before torch
# loads). `get_rule` and `available_rules` call `rule_modules()`, so the registry is full whichever module a user
# imports first.
_TOP = {'get_rule': 'rules.base', 'available_rules': 'rules.base', 'MLP': 'rules.base',
        'grad_alignment': 'rules.base', 'fit': 'train', 'make_optimizer': 'train'}
__all__ = list(_TOP)


def rule_modules():
    "Import every module that defines rules: each registers its own."
    from .rules import base, feedback, pepita, pepita_stack, drtp, ff, nsm, conv_nsm, s2m, clapp    # noqa: F401


def __getattr__(name:str):
    if name not in _TOP: raise AttributeError(f"module 'localrules' has no attribute {name!r}")
    from importlib import import_module
    return getattr(import_module(f'.{_TOP[name]}', __name__), name)


def __dir__(): return sorted(list(globals()) + __all__)
