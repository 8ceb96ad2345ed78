"Committed pages against the committed ledger: report.md and the ledger figures are what the ledger gives now."
import json, shutil
from pathlib import Path
import nbformat
import pytest
from conftest import ROOT
from localrules.report import stale_pages, experiment_results, ledger_cells, LEDGER_TAG

RESULTS = ROOT/'results'
EXPERIMENTS = sorted((ROOT/'nbs'/'experiments').glob('*.ipynb'))

def test_committed_pages_are_not_stale():
    "Fails when a ledger row was gathered without regenerating the pages (fix: `localrules report --update-ledger`)."
    stale = stale_pages(RESULTS)
    assert not stale, 'stale against the ledger (run `localrules report --update-ledger`):\n' + '\n'.join(stale)

def _copy_results(dst:Path) -> Path:
    "A copy of results/ without the figure files (the ledger, report.md, each SOURCE.json)."
    shutil.copytree(RESULTS/'ledger', dst/'ledger')
    shutil.copyfile(RESULTS/'report.md', dst/'report.md')
    shutil.copyfile(RESULTS/'paper_reference.csv', dst/'paper_reference.csv')
    for src in RESULTS.glob('figures/*/SOURCE.json'):
        (dst/'figures'/src.parent.name).mkdir(parents=True)
        shutil.copyfile(src, dst/'figures'/src.parent.name/'SOURCE.json')
        for f in src.parent.glob('ledger_*'):
            (dst/'figures'/src.parent.name/f.name).touch()
    return dst

def test_a_new_ledger_row_makes_the_pages_stale(tmp_path):
    res = _copy_results(tmp_path)
    assert stale_pages(res) == stale_pages(RESULTS)
    path = res/'ledger'/'table1_mlp_1hl.jsonl'
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    final = next(r for r in rows if r['kind'] == 'final')
    extra = dict(final, run_id='a-new-run', seed=99, value=final['value'] + 1, date='2100-01-01T00:00:00+00:00')
    with open(path, 'a') as f:
        f.write(json.dumps(extra, sort_keys=True) + '\n')
    stale = stale_pages(res)
    assert any('report.md' in s for s in stale), stale
    assert any('table1_mlp_1hl/SOURCE.json' in s for s in stale), stale

def test_a_missing_ledger_figure_is_reported(tmp_path):
    res = _copy_results(tmp_path)
    victim = next(iter(sorted(res.glob('figures/*/ledger_*.svg'))))
    victim.unlink()
    assert any(str(victim) in s for s in stale_pages(res))

@pytest.mark.parametrize('nb', EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_page_ends_with_its_ledger_results(nb):
    cells = nbformat.read(nb, as_version=4).cells
    assert cells[-2].cell_type == 'markdown' and cells[-2].source.startswith('## Results in the ledger'), nb.name
    assert LEDGER_TAG in cells[-1].metadata.get('tags', []), nb.name
    assert f"experiment_results('{nb.stem}')" in cells[-1].source, nb.name
    assert ledger_cells(nbformat.read(nb, as_version=4)) == [len(cells) - 1]      # the only cell the docs build runs

def test_ledger_figures_are_paper_size():
    "Every ledger figure: a PNG of >= 200 dpi with a PDF and an SVG beside it."
    from PIL import Image
    sources = sorted(RESULTS.glob('figures/*/SOURCE.json'))
    assert sources
    n = 0
    for src in sources:
        for name in json.loads(src.read_text()).get('ledger', {}).get('figures', []):
            png = src.parent/f'{name}.png'
            assert Image.open(png).info['dpi'][0] >= 199.5, png
            assert (src.parent/f'{name}.pdf').read_bytes()[:5] == b'%PDF-'
            assert b'<svg' in (src.parent/f'{name}.svg').read_bytes()[:1000]
            n += 1
    assert n >= len(EXPERIMENTS)

def test_experiment_results_only_reads(tmp_path):
    res = _copy_results(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in res.rglob('*')}
    out = experiment_results('clapp_fig2_theorem31', res, show=False)
    assert {p: p.stat().st_mtime_ns for p in res.rglob('*')} == before
    assert out['rows'] > 0 and out['figures'] and 'cos_layer1' in out['tables']
