"""The ledger figures, redrawn from the committed ledger as `save_ledger_figures` draws them: no constant plotted, every
value axis fitted to its data, text readable at the page's width, titles in words; and the committed PNGs match."""
import json
from pathlib import Path
import pytest
from conftest import ROOT
from localrules.store import read_ledger, read_reference
from localrules.report.figures import ledger_figures, figure_problems, PAGE_WIDTH_IN

RESULTS = ROOT/'results'
EXPERIMENTS = sorted(p.stem for p in (RESULTS/'ledger').glob('*.jsonl'))

@pytest.mark.parametrize('name', EXPERIMENTS)
def test_ledger_figures_fit_a_page(name):
    import matplotlib.pyplot as plt
    rows = read_ledger(RESULTS/'ledger', name)
    figs = ledger_figures(name, rows, read_reference(RESULTS/'paper_reference.csv', name))
    try:
        for key, fig in figs.items():
            assert fig.get_size_inches()[0] <= PAGE_WIDTH_IN + 1e-9, (key, fig.get_size_inches())
            assert figure_problems(fig) == [], (key, figure_problems(fig))
            title = fig.get_suptitle()
            assert name in title and 'seed' in title and 'seeds one' not in title and '[' not in title, title
    finally:
        for fig in figs.values():
            plt.close(fig)

def test_committed_figures_are_drawn_at_page_width():
    "The committed PNGs are the page-width drawings (<= PAGE_WIDTH_IN at their dpi), not the old wide ones."
    from PIL import Image
    for src in sorted(RESULTS.glob('figures/*/SOURCE.json')):
        for f in json.loads(src.read_text()).get('ledger', {}).get('figures', []):
            im = Image.open(src.parent/f'{f}.png')
            inches = im.size[0] / im.info['dpi'][0]
            assert inches <= PAGE_WIDTH_IN + 0.3, (src.parent.name, f, inches)   # bbox 'tight' may add a little
