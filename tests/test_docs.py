"The docs pages render without Quarto: the results page shows measured-vs-paper tables and its figures in a real browser."
import shutil
from pathlib import Path
import pytest
from conftest import cli, ROOT

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    cli('docs', '--out', out, check=True, timeout=900)
    return out

def test_every_notebook_has_a_page(site):
    pages = {p.name for p in site.glob('*.html')}
    for nb in (ROOT/'nbs').glob('*.ipynb'): assert f'{nb.stem}.html' in pages
    for nb in (ROOT/'nbs'/'experiments').glob('*.ipynb'): assert f'experiments-{nb.stem}.html' in pages

@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_results_page_renders_tables_and_figures(site):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--disable-background-networking'])
        page = b.new_page(); page.goto((site/'results.html').as_uri()); page.wait_for_load_state('load')
        text = page.inner_text('body')
        assert 'measured' in text and 'paper' in text and 'bp_vs_fa' in text
        n_tables = page.locator('table').count()
        imgs = page.eval_on_selector_all('img', 'els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])')
        page.screenshot(path=str(site/'results.png'), full_page=True)
        b.close()
    assert n_tables >= 1
    assert imgs and all(ok and w > 100 and h > 100 for ok, w, h in imgs), imgs
