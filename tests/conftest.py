import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCALRULES = str(Path(sys.executable).parent/'localrules')   # the installed console command

def cli(*args, cwd=None, timeout=600, check=False):
    "Run the `localrules` console command; returns the CompletedProcess (stdout+stderr merged)."
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    p = subprocess.run([LOCALRULES, *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
                       env=env)
    p.output = p.stdout + p.stderr
    if check and p.returncode:
        raise AssertionError(f"localrules {' '.join(map(str, args))} failed:\n{p.output[-4000:]}")
    return p

@pytest.fixture
def root(): return ROOT
