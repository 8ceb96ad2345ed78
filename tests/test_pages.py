"Committed pages against the committed ledger: report.md and the ledger figures are what the ledger gives now."
import json, shutil
from pathlib import Path
import nbformat
import pytest
from conftest import ROOT
from localrules.report.results import stale_pages, experiment_results
from localrules.report.site import ledger_cells, LEDGER_TAG

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
    """The page ends with '## Results in the ledger': the experiment's ledger cell, then for each variant the notebook
    runs (`VARIANTS`: Sup. Fig. 6 in Fig. 2a's, Fig. A2 in Fig. 4C's) a heading and the variant's ledger cell."""
    from localrules.catalog import experiments
    cells = nbformat.read(nb, as_version=4).cells
    names = [nb.stem] + [n for n, e in experiments().items() if e.get('variant_of') == nb.stem]
    k = len(cells) - 2 * len(names)
    assert cells[k].cell_type == 'markdown' and cells[k].source.startswith('## Results in the ledger'), nb.name
    at = [k + 1 + 2 * i for i in range(len(names))]
    for i, name in zip(at, names):
        assert LEDGER_TAG in cells[i].metadata.get('tags', []), (nb.name, i)
        assert f"experiment_results('{name}')" in cells[i].source, (nb.name, name)
        if name != nb.stem: assert f'(`{name}`)' in cells[i - 1].source, (nb.name, cells[i - 1].source[:80])
    assert ledger_cells(nbformat.read(nb, as_version=4)) == at      # the only cells the docs build runs

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

def test_bad_ledger_rows_are_skipped_with_file_and_line_and_the_report_goes_on(tmp_path, capsys):
    "A row with `date` an int, one with `seed` a string and a broken line: skipped, named by file:line; report goes on."
    from localrules.report.results import report_markdown
    res = _copy_results(tmp_path)
    path = res/'ledger'/'table1_mlp_1hl.jsonl'
    n = len(path.read_text().splitlines())
    final = next(json.loads(l) for l in path.read_text().splitlines() if json.loads(l)['kind'] == 'final')
    with open(path, 'a') as f:
        f.write(json.dumps(dict(final, date=20260101, run_id='bad-date')) + '\n')
        f.write(json.dumps(dict(final, seed='0', run_id='bad-seed')) + '\n')
        f.write('{"experiment": "table1_mlp_1hl", \n')
    capsys.readouterr()
    assert report_markdown(res) == report_markdown(RESULTS)
    err = capsys.readouterr().err
    wants = ((n + 1, "field 'date' is 20260101"), (n + 2, 'field \'seed\' is "0"'), (n + 3, 'not valid JSON'))
    for line, what in wants:
        assert f'table1_mlp_1hl.jsonl:{line}: {what}' in err, err

def test_a_reference_value_that_is_no_number_names_file_and_line(tmp_path):
    from localrules.store import read_reference
    lines = (RESULTS/'paper_reference.csv').read_text().splitlines()
    lines[2] = lines[2].replace(',98.48,', ',abc,')
    (tmp_path/'paper_reference.csv').write_text('\n'.join(lines) + '\n')
    with pytest.raises(ValueError, match=r"paper_reference.csv:3: value='abc' is not a finite number"):
        read_reference(tmp_path/'paper_reference.csv')

def test_update_ledger_refuses_a_run_with_a_damaged_unit(tmp_path, capsys):
    from localrules.store import read_ledger
    from localrules.runs import Run
    from localrules.report.results import report
    run = Run(tmp_path/'runs'/'demo'/'smoke-1', 'demo', 'smoke', {'lr': 0.1})
    run.record(dict(rule='bp', seed=0), {'test_acc': 90.})
    run.record(dict(rule='fa', seed=0), {'test_acc': 80.})
    run.finish()
    unit = run.dir/'units'/'rule=fa-seed=0.json'
    unit.write_text('[{"kind": "fin')
    (tmp_path/'results'/'ledger').mkdir(parents=True)
    capsys.readouterr()
    report(tmp_path/'runs', tmp_path/'results', update_ledger=True)
    err = capsys.readouterr().err
    assert 'rule=fa-seed=0.json: the unit result is damaged' in err and 'not gathered' in err, err
    assert read_ledger(tmp_path/'results'/'ledger') == []                 # nothing of that run was merged

def test_diverged_units_show_as_diverged_in_the_tables():
    from localrules.report.ledger import aggregate, paper_table
    base = dict(experiment='t', preset='paper', run_id='r', commit='c', device='cpu', date='2026-01-01',
                params='{"lr": 1e30}', step=None, rule='bp', dataset='mnist')
    rows = [dict(base, kind='status', metric=None, value=None, seed=0, status='diverged', message='nan at epoch 1'),
            dict(base, kind='final', metric='test_acc', value=90., seed=0, rule='fa')]
    table = paper_table(aggregate(rows))
    assert '| bp | diverged (×1) |' in table and '| fa | 90 (n=1) |' in table, table

def test_the_committed_status_counts_each_number_once_and_reproduced_needs_3_seeds():
    "On the committed ledger: no `reproduced` from fewer than 3 seeds; a duplicated number counted once; tight cosines."
    from localrules.store import read_ledger, read_reference
    from localrules.report.ledger import aggregate
    from localrules.report.claims import status_rows, tolerance
    from localrules.catalog import experiments
    reference = read_reference(RESULTS/'paper_reference.csv')
    rows = status_rows(reference, aggregate(read_ledger(RESULTS/'ledger'), reference), experiments())
    assert all(r['summary']['n'] >= 3 for r in rows if r['status'] == 'reproduced')
    assert all(r['status'] != 'reproduced' for r in rows if r['label'].startswith('agrees ('))
    ids = [tuple(r['ref'][k] for k in ('paper', 'source', 'metric', 'value', 'key')) for r in rows]
    assert len(ids) == len(set(ids)) == len([r for r in reference if not r.get('same_as')])
    table1 = [r for r in rows if r['ref']['experiment'] == 'table1_mlp_1hl' and 'dataset=mnist' in r['ref']['key']
              and r['ref']['key'].startswith(('rule=bp;', 'rule=fa;')) and 'variant=base' in r['ref']['key']]
    assert len(table1) == 2 and all('bp_vs_fa' in r['also'] for r in table1)
    cosines = [r for r in rows if r['ref']['metric'].startswith('cos_layer')]
    assert cosines and all(tolerance(r['ref']) <= 0.05 for r in cosines)
    assert all(r['why'] != 'needs a GPU' for r in rows if r['ref']['experiment'] == 'bp_vs_fa')
    coates = [r for r in rows if 'n_filters=4000' in r['ref']['key'] or 'kmeans_hard' in r['ref']['key']]
    assert coates and all(r['why'] == 'no preset measures it' for r in coates), [r['note'] for r in coates]
