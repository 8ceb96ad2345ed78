__version__ = "0.1.0"

# Hand-written (nbdev writes only `__version__` here). What a user needs, from the package's top; and every module
# that defines rules is imported, so that the registry (`available_rules()`) is full after `import localrules`.
from .rules import get_rule, available_rules, MLP, grad_alignment
from .train import fit, make_optimizer
from . import feedback, pepita, drtp, ff, nsm, conv_nsm, s2m, clapp     # the rule modules: each registers its own

__all__ = ['get_rule', 'available_rules', 'MLP', 'fit', 'make_optimizer', 'grad_alignment']
