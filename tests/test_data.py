"Datasets: names, splits, clear errors when files are missing, offline sources."
from pathlib import Path
import pytest, torch
from localrules.data import get_dataset, load_tensors, DatasetNotFoundError, DEBIAN_FASHION, SPLITS, TensorLoader

@pytest.mark.parametrize('name,split', [('mnist', 'train'), ('fashion_mnist', 'test'), ('cifar10', 'train'),
                                        ('cifar100', 'test'),
                                        ('stl10', 'unlabeled'), ('tiny_imagenet', 'val'), ('cifar10-jpeg', 'train')])
def test_missing_files_error_names_dataset_folder_and_remedy(tmp_path, name, split, monkeypatch):
    import localrules.data as d
    monkeypatch.setattr(d, 'DEBIAN_FASHION', tmp_path/'none')
    monkeypatch.setattr(d._debian_fashion, '__defaults__', (tmp_path/'none',))
    with pytest.raises(DatasetNotFoundError) as e: get_dataset(name, root=tmp_path, split=split)
    msg = str(e.value)
    assert repr(name) in msg and str(tmp_path.resolve()) in msg and 'To obtain them' in msg

def test_failed_download_says_so(tmp_path, monkeypatch):
    import torchvision
    def boom(*a, **k): raise RuntimeError('network unreachable')
    monkeypatch.setattr(torchvision.datasets.MNIST, 'download', boom)
    with pytest.raises(DatasetNotFoundError, match='download failed: RuntimeError: network unreachable'):
        get_dataset('mnist', root=tmp_path, download=True)

@pytest.mark.parametrize('bad', [dict(name='imagenet'), dict(name='stl10', split='val'),
                                 dict(name='digits', split='unlabeled')])
def test_bad_names_and_splits(bad):
    with pytest.raises(ValueError) as e: get_dataset(**bad)
    assert list(bad)[-1] in str(e.value)

@pytest.mark.skipif(not DEBIAN_FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    x, y = load_tensors('fashion_mnist', 'test', root=tmp_path, flatten=True, limit=500)
    assert x.shape == (500, 784) and 0 <= x.min() and x.max() <= 1 and y.max() == 9

def test_tensor_loader_is_seeded_and_covers_all():
    x, y = load_tensors('digits', 'train')
    a = [b[1] for b in TensorLoader(x, y, batch_size=256, seed=3)]
    b = [b[1] for b in TensorLoader(x, y, batch_size=256, seed=3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and sum(map(len, a)) == len(y)
    assert sorted(torch.cat(a).tolist()) == sorted(y.tolist())

def test_every_dataset_has_splits():
    for name, splits in SPLITS.items(): assert splits and 'train' in splits

def _idx(path, arr):
    "Write `arr` (uint8) as a gzip-compressed IDX file."
    import gzip, struct, numpy as np
    arr = np.asarray(arr, dtype=np.uint8)
    with gzip.open(path, 'wb') as f:
        f.write(struct.pack('>I', 0x0800 + arr.ndim) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.tobytes())

def test_debian_fashion_copy_is_used_even_when_download_is_on(tmp_path, monkeypatch):
    "The experiments pass download=True: the Debian copy must still be found first, with no network attempt."
    import numpy as np, torchvision, localrules.data as d
    src = tmp_path/'debian'
    src.mkdir()
    for pre, n in [('train', 6), ('t10k', 4)]:
        _idx(src/f'{pre}-images-idx3-ubyte.gz', np.full((n, 28, 28), 7))
        _idx(src/f'{pre}-labels-idx1-ubyte.gz', np.arange(n))
    monkeypatch.setattr(d._debian_fashion, '__defaults__', (src,))
    def boom(*a, **k): raise RuntimeError('network unreachable')
    monkeypatch.setattr(torchvision.datasets.mnist, 'download_and_extract_archive', boom)
    x, y = load_tensors('fashion_mnist', 'test', root=tmp_path/'root', download=True)
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [0, 1, 2, 3] and torch.allclose(x, torch.full_like(x, 7/255))

def _make_jpeg_archive(root, n=40):
    "A tiny cifar10-jpeg.tar.gz (two classes, `n` images per class and split) in the real layout."
    import tarfile, numpy as np
    from PIL import Image
    src = root/'src'
    for split in ('train', 'test'):
        for c in ('airplane', 'automobile'):
            (src/split/c).mkdir(parents=True)
            for i in range(n): Image.fromarray(np.full((32, 32, 3), i, np.uint8)).save(src/split/c/f'{i:04d}.jpg')
    with tarfile.open(root/'cifar10-jpeg.tar.gz', 'w:gz') as t:
        for split in ('train', 'test'): t.add(src/split, arcname=split)

def _count_jpeg(root): return len(get_dataset('cifar10-jpeg', root=root, split='train'))

def test_jpeg_copy_extracts_safely_with_concurrent_runs_and_stale_leftovers(tmp_path):
    from concurrent.futures import ProcessPoolExecutor
    _make_jpeg_archive(tmp_path)
    stale = tmp_path/'cifar10-jpeg.partial'/'train'/'zzz_stale'
    stale.mkdir(parents=True)   # an interrupted older run
    (stale/'x.jpg').write_bytes(b'not a jpeg')
    with ProcessPoolExecutor(4) as ex: counts = list(ex.map(_count_jpeg, [tmp_path] * 4))
    assert counts == [80] * 4                           # every run sees the whole copy, never a half-extracted one
    assert sorted(p.name for p in (tmp_path/'cifar10-jpeg'/'train').iterdir()) == ['airplane', 'automobile']
    assert not list(tmp_path.glob('cifar10-jpeg.partial-*'))   # no private temporary folder left behind

def test_dataset_error_survives_pickling(tmp_path):
    import pickle
    e = pickle.loads(pickle.dumps(DatasetNotFoundError('stl10', tmp_path, RuntimeError('offline'))))
    assert isinstance(e, DatasetNotFoundError) and "'stl10'" in str(e) and 'offline' in str(e)
