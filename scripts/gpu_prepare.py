"""Prepare one run of `scripts/gpu_run.sh` on a lent GPU machine (issue 26): fill the ignored folder `.gpu/` with the
wheels the machine lacks, the data sets and a manifest, check that what travels fits the 64 MiB limit, and print the
exact `run` call. Run it here (a package registry is needed for the wheels), right before the call:

    bash scripts/gpu_prepare.sh [--data ../shared/data] [--resume-from DIR]

`.gpu/` then holds
  wheels/                    scripts/gpu_wheels.py's wheels (CPython 3.12, manylinux x86-64)
  data/cifar10-jpeg.tar.gz   copied as is
  data/MNIST/raw/*.gz        copied as is, or, when the tree would not fit with them, data/mnist-raw.tar.xz (the four
                             uncompressed IDX files, 2 MB smaller); gpu_run.py checks their MD5 after unpacking
  resume/04_table1.tar.gz    with --resume-from: Table 1's run folders that came back from an earlier machine, slim
                             (run.json and DONE of each, the finished units of unfinished ones)
  manifest.json              commit, the blob hash of every tracked file (the machine has no git: it compares the
                             files it got with them and records commit+dirty if any differs), MD5s, sizes
"""
import argparse, gzip, hashlib, io, json, os, shutil, subprocess, sys, tarfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO/'scripts'))
import gpu_wheels  # noqa: E402

LIMIT = 64 * 2**20            # what travels: tracked + untracked-not-ignored files + carried paths (device notes)
MARGIN = 1 * 2**20            # kept free: the ledger grows between this check and the call
MNIST = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']
RUN_TIMEOUT = 600             # the tool's limit per command; gpu_run.py's own budget (540 s) ends before it


def git(*args) -> str:
    return subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def travel_bytes(carry:Path, skip:str=None) -> dict:
    """Bytes that travel to the machine: tracked files, untracked files git does not ignore, and the carried folder
    (less its subfolder `skip`)."""
    tracked = [p for p in git('ls-files', '-z').split('\0') if p]
    untracked = [p for p in git('ls-files', '-z', '--others', '--exclude-standard').split('\0') if p]
    size = lambda ps: sum((REPO/p).stat().st_size for p in ps if (REPO/p).is_file())
    carried = sum(f.stat().st_size for f in carry.rglob('*') if f.is_file() and f.relative_to(carry).parts[0] != skip)
    return dict(tracked=size(tracked), untracked=size(untracked), carried=carried)


def md5(path:Path, opener=open) -> str:
    h = hashlib.md5()
    with opener(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''): h.update(block)
    return h.hexdigest()


def mnist_md5s(src:Path) -> dict:
    "MD5 of each uncompressed IDX file (from the uncompressed copy where there is one, else through gzip)."
    raw = src/'MNIST'/'raw'
    return {n: md5(raw/n) if (raw/n).exists() else md5(raw/f'{n}.gz', gzip.open) for n in MNIST}


def copy_data(src:Path, dest:Path, xz:bool):
    "cifar10-jpeg.tar.gz as is; MNIST's .gz files, or (xz) one tar.xz of the uncompressed files, made once."
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest/'cifar10-jpeg.tar.gz').exists(): shutil.copyfile(src/'cifar10-jpeg.tar.gz', dest/'cifar10-jpeg.tar.gz')
    raw = dest/'MNIST'/'raw'
    if not xz:
        raw.mkdir(parents=True, exist_ok=True)
        for n in MNIST:
            if not (raw/f'{n}.gz').exists(): shutil.copyfile(src/'MNIST'/'raw'/f'{n}.gz', raw/f'{n}.gz')
        (dest/'mnist-raw.tar.xz').unlink(missing_ok=True)
        return
    shutil.rmtree(dest/'MNIST', ignore_errors=True)
    if (dest/'mnist-raw.tar.xz').exists(): return
    print('packing MNIST as tar.xz (once; about a minute of one core) ...', flush=True)
    tmp = dest/'mnist-raw.tar.xz.partial'
    with tarfile.open(tmp, 'w:xz', preset=9) as t:
        for n in MNIST:
            f = src/'MNIST'/'raw'/n
            if f.exists(): t.add(f, arcname=f'MNIST/raw/{n}')
            else:
                with gzip.open(src/'MNIST'/'raw'/f'{n}.gz', 'rb') as g: data = g.read()
                info = tarfile.TarInfo(f'MNIST/raw/{n}')
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    os.replace(tmp, dest/'mnist-raw.tar.xz')


def manifest(carry:Path, src:Path) -> dict:
    dirty = git('status', '--porcelain', '--untracked-files=no').strip()
    blobs = {}
    for line in git('ls-files', '-s', '-z').split('\0'):
        if line:
            meta, path = line.split('\t', 1)
            blobs[path] = meta.split()[1]
    return dict(commit=git('rev-parse', 'HEAD').strip(), dirty_here=bool(dirty), blobs=blobs,
                mnist_md5=mnist_md5s(src), date=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                wheels=sorted(p.name for p in (carry/'wheels').glob('*.whl')))


def slim_resume(src:Path, dest:Path) -> dict:
    """Of a 04_table1.tar.gz that came back, what the next machine needs: every run's run.json and DONE (a finished
    run is skipped there, its results are here already), and the finished units of unfinished runs."""
    runs = {}
    with tarfile.open(src) as t:
        members = [m for m in t.getmembers() if m.isfile() and m.name.startswith('runs/')]
        for m in members: runs.setdefault('/'.join(m.name.split('/')[:3]), set()).add(m.name.split('/', 3)[3])
        done = {r for r, files in runs.items() if 'DONE' in files}
        keep = [m for m in members if m.name.endswith(('/run.json', '/DONE'))
                or ('/'.join(m.name.split('/')[:3]) not in done and '/units/' in m.name)]
        with tarfile.open(dest, 'w:gz') as out:
            for m in keep: out.addfile(m, t.extractfile(m))
    return dict(runs=len(runs), finished=len(done), files=len(keep), bytes=dest.stat().st_size)


def run_call(timeout:int=RUN_TIMEOUT) -> str:
    return json.dumps(dict(command='bash scripts/gpu_run.sh --device cuda', carry=['.gpu'], timeout_s=timeout))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default=str(REPO.parent/'shared'/'data'),
                    help='folder with MNIST/raw/ and cifar10-jpeg.tar.gz')
    ap.add_argument('--carry', default=str(REPO/'.gpu'), help='the ignored folder that travels')
    ap.add_argument('--resume-from', default=None,
                    help="an earlier run's output folder: its 04_table1.tar.gz is carried, Table 1 continues from it")
    ap.add_argument('--no-wheels', action='store_true', help='keep the wheels already in the folder (no registry)')
    a = ap.parse_args()
    src, carry = Path(a.data), Path(a.carry)
    missing = [p for p in ['cifar10-jpeg.tar.gz'] + [f'MNIST/raw/{n}.gz' for n in MNIST] if not (src/p).exists()]
    if missing: sys.exit(f"error: --data {src} lacks {missing}; point it at the shared data folder")
    if a.resume_from:
        pack = Path(a.resume_from)/'04_table1.tar.gz'
        if not pack.exists(): sys.exit(f"error: --resume-from {a.resume_from} has no 04_table1.tar.gz")
    ignored = subprocess.run(['git', 'check-ignore', '-q', str(carry/'x')], cwd=REPO).returncode == 0
    if not ignored: sys.exit(f"error: {carry} is not ignored by git: add it to .gitignore (it must not be committed)")
    carry.mkdir(parents=True, exist_ok=True)
    if not a.no_wheels:
        shutil.rmtree(carry/'wheels', ignore_errors=True)
        gpu_wheels.download(gpu_wheels.needed()[0], carry/'wheels')
    shutil.rmtree(carry/'resume', ignore_errors=True)
    if a.resume_from:
        (carry/'resume').mkdir()
        info = slim_resume(pack, carry/'resume'/'04_table1.tar.gz')
        print(f"resume: {info['runs']} run folder(s), {info['finished']} finished (skipped there), "
              f"{info['bytes'] / 2**20:.2f} MiB", flush=True)
    gz = sum((src/'MNIST'/'raw'/f'{n}.gz').stat().st_size for n in MNIST)
    with_gz = sum(travel_bytes(carry, skip='data').values()) + gz + (src/'cifar10-jpeg.tar.gz').stat().st_size
    xz = with_gz > LIMIT - MARGIN
    if xz:
        print(f"tree + data with MNIST as .gz: {with_gz / 2**20:.1f} MiB, over {(LIMIT - MARGIN) / 2**20:.0f} MiB: "
              "MNIST travels as one tar.xz instead", flush=True)
    copy_data(src, carry/'data', xz=xz)
    (carry/'manifest.json').write_text(json.dumps(manifest(carry, src), indent=1))
    sizes = travel_bytes(carry)
    total = sum(sizes.values())
    print(f"travels: tracked {sizes['tracked'] / 2**20:.1f} MiB + untracked {sizes['untracked'] / 2**20:.1f} MiB + "
          f".gpu {sizes['carried'] / 2**20:.1f} MiB = {total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB "
          f"(MNIST .gz alone: {gz / 2**20:.1f} MiB)")
    if total > LIMIT:
        sys.exit("error: over the limit: the call would be refused; commit less under results/, or leave out "
                 "--resume-from")
    if json.loads((carry/'manifest.json').read_text())['dirty_here']:
        print("note: the tree has uncommitted changes: results will say commit+dirty; commit first for clean "
              "provenance")
    print("\nthe call (device tool `run`; no kind: an H100, or an H200 where none opens):")
    print(run_call())
    print("afterwards: python scripts/gpu_ingest.py <files_at>   (ledger rows, benchmark JSON; see its --help)")


if __name__ == '__main__': main()
