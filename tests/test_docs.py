"""The offline docs site (`localrules docs`): every notebook a page, navigable from the home page, math rendered without
network, measured-vs-paper tables with numbers."""
import re, shutil
from pathlib import Path
import pytest
from conftest import cli, ROOT
SHOT_MS = 120_000      # screenshots wait on fonts; a loaded CI machine needs more than playwright's 30 s

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
NUMBER = re.compile(r'\d+\.\d+ ± \d')

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    cli('docs', '--out', out, check=True, timeout=900)
    return out

@pytest.fixture(scope='module')
def shots(tmp_path_factory):
    "Screenshots go to pytest's temporary folder (kept by pytest as the run's artifacts), never into the repository."
    return tmp_path_factory.mktemp('screenshots')

def test_every_notebook_has_a_page(site):
    pages = {p.name for p in site.glob('*.html')}
    for nb in (ROOT/'nbs').glob('*.ipynb'): assert f'{nb.stem}.html' in pages
    for nb in (ROOT/'nbs'/'api').glob('*.ipynb'): assert f'api-{nb.stem}.html' in pages
    for nb in (ROOT/'nbs'/'experiments').glob('*.ipynb'): assert f'experiments-{nb.stem}.html' in pages

def test_pages_have_no_directives_prompts_or_cdn(site):
    for p in sorted(site.glob('*.html')):
        html = p.read_text()
        text = re.sub(r'<[^>]+>', '', html)
        assert not re.search(r'(?m)^\s*#\|', text) and 'In&nbsp;[' not in html and 'In [ ]' not in html, p.name
        assert not re.search(r'<script[^>]+src="https?:',
                             html) and 'cdn.' not in html and 'mathjax' not in html.lower(), p.name

def test_experiment_pages_show_ledger_results_without_errors(site):
    "Every experiment page carries its executed ledger cell: a table and a figure, no error output."
    for nb in sorted((ROOT/'nbs'/'experiments').glob('*.ipynb')):
        html = (site/f'experiments-{nb.stem}.html').read_text()
        assert 'Results in the ledger' in html and 'class="output error"' not in html, nb.stem
        assert '<table' in html and '<img src="data:image/png' in html, nb.stem

def test_links_between_pages_resolve(site):
    broken = []
    for p in sorted(site.glob('*.html')):
        for href in re.findall(r'<a [^>]*href="([^"#:]+\.html)(?:#[^"]*)?"', p.read_text()):
            if not (site/href).exists(): broken.append((p.name, href))
    assert not broken, broken[:10]

def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM,
                             args=['--no-sandbox', '--disable-gpu', '--disable-background-networking'])

@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_navigate_from_home_to_api_and_experiment_pages(site, shots):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = _browser(p)
        page = b.new_page()
        page.route(re.compile(r'^https?://'), lambda route: route.abort())        # offline: no request may leave
        page.goto((site/'index.html').as_uri())
        assert page.locator('nav.sidebar h3').count() >= 4
        assert 'Experiments' in page.inner_text('header') and 'Status' in page.inner_text('header')
        page.screenshot(path=str(shots/'home.png'), full_page=True, timeout=SHOT_MS)
        page.click('nav.sidebar a[href="api-07a_ledger.html"]')                       # an API page, with equations
        page.wait_for_load_state('load')
        assert page.url.endswith('07a_ledger.html') and page.inner_text('h1') == 'ledger'
        maths = page.locator('main math')
        assert maths.count() > 3
        box = maths.first.bounding_box()
        assert box and box['width'] > 5 and box['height'] > 5
        prose = ' '.join(page.eval_on_selector_all('main p', 'ps => ps.map(p => p.innerText)'))
        assert '\\frac' not in prose and '$' not in prose and 'MATHPH' not in prose, prose[:300]
        assert page.locator('main math mfrac').count() >= 1                       # a fraction laid out as one
        page.screenshot(path=str(shots/'api.png'), full_page=True, timeout=SHOT_MS)
        page.click('nav.sidebar a[href="experiments-table1_mlp_1hl.html"]')       # an experiment page
        page.wait_for_load_state('load')
        text = page.inner_text('main')
        assert 'Results in the ledger' in text                                 # the executed `ledger` cell
        figs = page.eval_on_selector_all('main img', 'els => els.map(e => [e.complete, e.naturalWidth])')
        assert figs and all(ok and w > 100 for ok, w in figs), figs
        heads = page.eval_on_selector_all('main table',
                                          'ts => ts.map(t => Array.from(t.querySelectorAll("th")).map(h => '
                                          'h.innerText))')
        cells = page.eval_on_selector_all('main table td', 'ds => ds.map(d => d.innerText)')
        page.screenshot(path=str(shots/'experiment.png'), full_page=True, timeout=SHOT_MS)
        b.close()
    assert any('paper' in h and any(c not in ('paper',) for c in h) for h in heads), heads
    assert any(NUMBER.search(c) or re.fullmatch(r'\d+\.\d+ \(n=\d+\)', c) for c in cells)

@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_status_page_counts_and_measured_vs_paper(site, shots):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = _browser(p)
        page = b.new_page()
        page.goto((site/'status.html').as_uri())
        text = page.inner_text('main')
        rows = page.eval_on_selector_all('main table tr',
                                         'rs => rs.map(r => Array.from(r.cells).map(c => c.innerText))')
        page.screenshot(path=str(shots/'status.png'), full_page=True, timeout=SHOT_MS)
        b.close()
    m = re.search(r'(\d+) numbers of the three papers \(each counted once\): (\d+) reproduced, (\d+) agree \(fewer '
                  r'than 3 seeds\), (\d+) off, (\d+) no result, (\d+) smoke only, (\d+) not run', text)
    assert m, text[:500]
    total, parts = int(m.group(1)), [int(x) for x in m.group(2, 3, 4, 5, 6, 7)]
    from localrules.store import read_reference
    from localrules.report.ledger import paper_id, THREE_PAPERS
    refs = read_reference(ROOT/'results'/'paper_reference.csv')
    once = [r for r in refs if paper_id(r['paper']) in THREE_PAPERS and not r.get('same_as')]
    assert total == sum(parts) == len(once)                       # the three papers' numbers, each once
    header = next(r for r in rows if 'measured' in r and 'paper' in r and 'status' in r)
    i_paper, i_meas, i_status = header.index('paper'), header.index('measured'), header.index('status')
    numbers = [r for r in rows if len(r) == len(header) and r != header]
    measured = [r for r in numbers if r[i_status] in ('reproduced', 'off') or r[i_status].startswith('agrees (')]
    assert len(measured) >= parts[0] + parts[1] + parts[2]         # comparisons' tables have the same columns
    assert all(re.match(r'\d', r[i_meas]) and re.match(r'-?\d', r[i_paper]) for r in measured)
    reproduced = [r for r in numbers if r[i_status] == 'reproduced']
    assert all(int(re.search(r'\(n=(\d+)\)', r[i_meas]).group(1)) >= 3 for r in reproduced), reproduced
    assert "Comparisons: other works' numbers" in text and 'Coates2011' in text

@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_status_tables_fit_a_1400_pixel_window(site, shots):
    "No table of the status page is wider than its place in a 1,400 x 900 window (no column cut off or scrolled)."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = _browser(p)
        page = b.new_page(viewport={'width': 1400, 'height': 900})
        page.goto((site/'status.html').as_uri())
        page.wait_for_load_state('load')
        widths = page.eval_on_selector_all('main table', 'ts => ts.map(t => [t.scrollWidth, t.clientWidth, '
                                           't.getBoundingClientRect().right])')
        page_width = page.evaluate('document.documentElement.scrollWidth')
        page.screenshot(path=str(shots/'status-1400.png'), full_page=False, timeout=SHOT_MS)
        b.close()
    assert widths and page_width <= 1400, (page_width, widths)
    assert all(scroll <= client and right <= 1400 for scroll, client, right in widths), widths

@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_results_page_renders_tables_and_figures(site, shots):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = _browser(p)
        page = b.new_page()
        page.goto((site/'results.html').as_uri())
        page.wait_for_load_state('load')
        text = page.inner_text('body')
        assert 'measured' in text and 'paper' in text and 'bp_vs_fa' in text
        n_tables = page.locator('table').count()
        imgs = page.eval_on_selector_all('main img',
                                         'els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])')
        page.screenshot(path=str(shots/'results.png'), full_page=True, timeout=SHOT_MS)
        b.close()
    assert n_tables >= 1
    assert imgs and all(ok and w > 100 and h > 100 for ok, w, h in imgs), imgs
