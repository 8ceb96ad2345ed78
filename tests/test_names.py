"""One name per experiment ('FIGURE: TITLE' of its EXPERIMENT) on its page, in the site's sidebar and in `localrules
list`; papers by arXiv id; no internal tracking numbers; one source for time estimates; the API on the library pages."""
import importlib, inspect, re
from pathlib import Path
import pytest
from conftest import ROOT
from localrules.catalog import experiments, experiment_times, list_table, page_label, table_text
from localrules.protocols.mlp_protocol import preset_times
from localrules.report.site import render_cells, site_structure, time_html
from localrules.report.claims import parse_estimate

NBS = ROOT/'nbs'
ARXIV = re.compile(r'^\d{4}\.\d{4,5}$')
TRACKING = re.compile(r'\bissues? \d+', re.I)

@pytest.fixture(scope='module')
def exps(): return experiments()

@pytest.fixture(scope='module')
def structure(): return site_structure(NBS)

def _heading(path:Path) -> str:
    import nbformat
    cells = nbformat.read(path, as_version=4).cells
    head = next(c.source for c in cells if c.cell_type == 'markdown' and c.source.lstrip().startswith('# '))
    return head.lstrip()[2:]

def test_page_title_is_the_experiments_name(exps):
    wrong = {n: (_heading(e['path']).splitlines()[0], page_label(n, exps))
             for n, e in exps.items() if 'variant_of' not in e}
    wrong = {n: v for n, v in wrong.items() if v[0] != v[1]}
    assert not wrong, f'page heading != EXPERIMENT figure: title: {wrong}'

def test_sidebar_names_experiments_as_their_pages(exps, structure):
    _, _, sidebar = structure
    labels = {href: text for section, items in sidebar if section.startswith('Experiments') for text, href in items}
    for n, e in exps.items():
        if 'variant_of' in e: assert f'experiments-{n}.html' not in labels, n      # run by its notebook's page
        else: assert labels[f'experiments-{n}.html'] == page_label(n, exps), n
    texts = [t for _, items in sidebar for t, _ in items]
    assert len(texts) == len(set(texts)), sorted(t for t in texts if texts.count(t) > 1)
    assert sum(t.startswith('Table 1') for t in texts) == 1, [t for t in texts if 'Table 1' in t]

def test_no_internal_tracking_numbers_in_names(exps, structure):
    _, navbar, sidebar = structure
    names = [t for _, items in sidebar for t, _ in items] + [t for t, _ in navbar] + [s for s, _ in sidebar]
    names += [v for e in exps.values() for k, v in e['EXPERIMENT'].items() if k in ('figure', 'title')]
    names += [_heading(p).splitlines()[0] for p in sorted(NBS.glob('*.ipynb')) + sorted(NBS.glob('api/*.ipynb'))]
    names += (ROOT/'_quarto.yml').read_text().splitlines()
    assert not [t for t in names if TRACKING.search(t)], [t for t in names if TRACKING.search(t)]
    assert not TRACKING.search(list_table(exps, rates={}, width=120))

def test_list_keeps_its_columns_and_names_papers_by_arxiv_id(exps):
    for width in (100, 160):
        lines = list_table(exps, width=width).splitlines()
        head = lines[0]
        starts = [head.index(h) for h in ('paper', 'figure', 'smoke', 'paper preset')]
        assert all(len(line) <= width for line in lines), max(map(len, lines))
        for line in lines[1:]:                               # a cell never runs into the next column
            assert all(line[s - 2:s].strip() == '' for s in starts if len(line) > s), line
        rows = [line for line in lines[1:] if line[:starts[0]].strip()]
        assert [r.split()[0] for r in rows] == list(exps)
        papers = [r[starts[0]:starts[1]].strip() for r in rows]
        assert all(ARXIV.match(p) for p in papers), papers
    assert '2601.21683' in papers and 'clapp++' not in ' '.join(papers)

def test_table_text_wraps_within_columns():
    out = table_text([('a', 'b'), ('x', 'a long text that must wrap ' * 3)], [3, 0], width=30).splitlines()
    assert len(out) > 2 and all(len(line) <= 30 for line in out) and all(line[3:5] == '  ' for line in out)

def test_one_source_for_time_estimates(exps):
    for n, e in exps.items():
        if 'variant_of' in e: continue                  # a variant's page is its notebook's (Fig. A2: Fig. 4C's)
        t = experiment_times(e)
        page = time_html(e['path'])
        assert t['paper'].replace('&', '&amp;') in page and t['smoke'] in page, n
        said = e['EXPERIMENT']['time']['paper']
        if preset_times(e['PRESETS'].get('paper', {}), {}):       # computed from the preset: no second estimate
            assert parse_estimate(said) is None and 'localrules list' in said, (n, said)

def _library():
    import nbformat
    for p in sorted(NBS.glob('api/[0-3]*.ipynb')):
        nb = nbformat.read(p, as_version=4)
        code = '\n'.join(c.source for c in nb.cells if c.cell_type == 'code')
        mod = importlib.import_module('localrules.' + re.search(r'(?m)^#\|\s*default_exp\s+(\S+)', code).group(1))
        yield p, nb, mod

@pytest.mark.parametrize('p,nb,mod', list(_library()), ids=lambda v: v.stem if isinstance(v, Path) else '')
def test_every_exported_function_and_class_is_documented_on_its_page(p, nb, mod):
    _, _, body = render_cells(nb)
    public = [n for n in mod.__all__ if (inspect.isfunction(o := getattr(mod, n)) or inspect.isclass(o))
              and o.__module__ == mod.__name__]
    assert public, p.name
    missing = [n for n in public if f'<div class="api" id="{n}">' not in body]
    assert not missing, f'{p.name}: no show_doc for {missing}'
    entry = body.split(f'<div class="api" id="{public[0]}">', 1)[1].split('</div>', 1)[0]
    assert f'<h4>{public[0]}</h4>' in entry and '<pre><code class="language-python">' in entry, entry[:300]
