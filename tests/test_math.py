"""Equations on the library pages are LaTeX ($..$, $$..$$) that the offline site renders to MathML, never plain-text
fragments such as `h_{l−1}^errᵀ` or `(σ_F(0)/σ_F(t))^{1/L}` (CONTRIBUTING.md, "Notebook rules")."""
import importlib, inspect, re
from pathlib import Path
import pytest
from conftest import ROOT
from localrules.report.site import protect_math

LIBRARY = sorted(p for p in (ROOT/'nbs'/'api').glob('[0-3]*.ipynb'))
# TeX-like sub/superscripts, a transpose sign, unicode letter subscripts, `x_l`-style subscripts of one letter
RAW = re.compile(r'_\{|\^\{|ᵀ|\^err|[₀-₉ᵢⱼₗₘₙₖᵏᵐˡⁿ]|(?<![\w/.\-\\])[A-Za-zα-ωΑ-ΩΔ∂][_^][A-Za-z0-9(]')
CODE = re.compile(r'```.*?```|`[^`\n]*`', re.S)

def raw_math(text:str) -> list:
    "Plain-text maths in markdown `text`: fragments outside code spans and outside the $..$ / $$..$$ the site renders."
    body, _ = protect_math(text)
    prose = CODE.sub(' ', body)
    return [prose[max(0, m.start() - 20):m.end() + 10].replace('\n', ' ') for m in RAW.finditer(prose)]

def bad_math(text:str) -> list:
    "TeX the converter cannot render, and `$` left over in the prose (an inline $..$ broken across lines)."
    body, maths = protect_math(text)
    fallbacks = [m for m in maths if 'math-fallback' in m]
    return fallbacks + [line for line in CODE.sub(' ', body).splitlines() if '$' in line]

def markdown_cells(path:Path) -> list:
    import nbformat
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == 'markdown']

def test_the_checks_catch_raw_and_broken_math():
    assert raw_math('ΔW_l = (h_l − h_l^err) h_{l−1}^errᵀ') and raw_math('each factor (σ_F(0)/σ_F(t))^{1/L}')
    assert raw_math('a mask W₁ᵏ') and raw_math('the rule δ_l h')
    assert not raw_math(r'$\Delta W_l = (h_l - h_l^{err})\,(h_{l-1}^{err})^\top$ and $$s = (\sigma_F)^{1/L}$$')
    assert not raw_math('`h_{l}` in code, `bp_vs_fa`, experiments/bp_vs_fa, 10⁻³, 3×3')
    assert bad_math('inline $a\n+ b$ broken') and not bad_math(r'fine $\frac{a}{b}$ and $$\sum_i x_i$$')

@pytest.mark.parametrize('nb', LIBRARY, ids=lambda p: p.stem)
def test_library_markdown_has_no_raw_math(nb):
    found = [f for src in markdown_cells(nb) for f in raw_math(src)]
    assert not found, f'{nb.name}: write these as $..$ LaTeX: {found[:8]}'

@pytest.mark.parametrize('nb', LIBRARY, ids=lambda p: p.stem)
def test_library_math_renders_to_mathml(nb):
    found = [f for src in markdown_cells(nb) for f in bad_math(src)]
    assert not found, f'{nb.name}: {found[:5]}'

def _documented():
    "(module, name, docstring) of every exported public function and class (their show_doc is on the pages)."
    import nbformat
    for p in LIBRARY:
        code = '\n'.join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == 'code')
        mod = importlib.import_module('localrules.' + re.search(r'(?m)^#\|\s*default_exp\s+(\S+)', code).group(1))
        for name in mod.__all__:
            obj = getattr(mod, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == mod.__name__:
                yield mod.__name__, name, obj.__doc__ or ''

def test_docstrings_on_the_pages_have_no_raw_math():
    found = {f'{m}.{n}': raw_math(doc) for m, n, doc in _documented() if raw_math(doc)}
    assert not found, f'write the maths of these docstrings as $..$: {found}'

@pytest.mark.parametrize('nb', LIBRARY, ids=lambda p: p.stem)
def test_library_pages_carry_mathml_not_tex(nb):
    "The page as the offline site renders it: no TeX, `$` or placeholder left in its prose, no converter fallback."
    import html, nbformat
    from localrules.report.site import render_cells
    _, _, body = render_cells(nbformat.read(nb, as_version=4))
    assert '<code class="math-fallback">' not in body, nb.name
    prose = [html.unescape(re.sub(r'<[^>]+>', '', re.sub(r'<math.*?</math>|<code>.*?</code>', '', p, flags=re.S)))
             for p in re.findall(r'<p>(.*?)</p>', body, re.S)]
    left = [p[:120] for p in prose if '$' in p or '\\frac' in p or '\\top' in p or 'MATHPH' in p]
    assert not left, f'{nb.name}: {left[:4]}'
