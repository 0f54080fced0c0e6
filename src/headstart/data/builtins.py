"""Built-in data sets: `digits` (bundled with scikit-learn) and `fashion-mnist` (Debian package, cache or download)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset, Splits

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def cache_root() -> Path:
    return Path(os.environ.get("HEADSTART_CACHE", Path.home() / ".cache" / "headstart"))


def digits() -> Splits:
    """scikit-learn's 1,797 8x8 handwritten digits as 8-bit grayscale images; split later by the caller."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    data = Dataset("image", images, bunch.target, [str(d) for d in range(10)], name="digits")
    return Splits(train=data, val=None, test=None)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format). Hand-written: it is a 16-line format no library we use reads."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _fashion_dir() -> Path:
    """A folder holding the four Fashion-MNIST files: Debian's, the cache, or a verified download."""
    from torchvision.datasets import FashionMNIST

    names = [name for name, _ in FashionMNIST.resources]
    cache = cache_root() / "datasets" / "fashion-mnist"
    for folder in (FASHION_DEBIAN_DIR, cache):
        if all((folder / n).is_file() for n in names):
            return folder
    from torchvision.datasets.utils import download_url

    try:
        for name, md5 in FashionMNIST.resources:
            if not (cache / name).is_file():
                download_url(FashionMNIST.mirrors[0] + name, str(cache), filename=name, md5=md5)
    except Exception as e:
        raise DataError(
            f"fashion-mnist is not available offline and could not be downloaded ({type(e).__name__}). "
            f"Install it with `apt-get install dataset-fashion-mnist` (files in {FASHION_DEBIAN_DIR}) or put "
            f"{', '.join(names)} in {cache}"
        ) from e
    return cache


def fashion_mnist() -> Splits:
    """The official 60,000 training and 10,000 test images; validation is split from training by the caller."""
    folder = _fashion_dir()
    train = Dataset("image", read_idx(folder / "train-images-idx3-ubyte.gz"),
                    read_idx(folder / "train-labels-idx1-ubyte.gz"), FASHION_CLASSES, name="fashion-mnist")
    test = Dataset("image", read_idx(folder / "t10k-images-idx3-ubyte.gz"),
                   read_idx(folder / "t10k-labels-idx1-ubyte.gz"), FASHION_CLASSES, name="fashion-mnist-test")
    return Splits(train=train, val=None, test=test)


BUILTINS: dict[str, Callable[[], Splits]] = {"digits": digits, "fashion-mnist": fashion_mnist}
