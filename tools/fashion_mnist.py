"""Fashion-MNIST loader (numpy only).

Reads the gzipped IDX files that the Debian/Ubuntu package
``dataset-fashion-mnist`` installs under /usr/share/datasets/fashion-mnist/:

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (60000 examples)
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (10000 examples)

    >>> from fashion_mnist import load, CLASS_NAMES
    >>> (x_train, y_train), (x_test, y_test) = load()
    >>> x_train.shape, x_train.dtype, y_train.dtype
    ((60000, 28, 28), dtype('uint8'), dtype('uint8'))
"""

from __future__ import annotations

import gzip
import os
import struct
import sys

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get update && apt-get install -y dataset-fashion-mnist"

# Label i is CLASS_NAMES[i] (order from the dataset's README).
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_UBYTE = 0x08  # IDX element type code for unsigned byte


def dataset_dir(path: str | None = None) -> str:
    """The directory to read: ``path``, else $FASHION_MNIST_DIR, else DEFAULT_DIR."""
    return path or os.environ.get("FASHION_MNIST_DIR") or DEFAULT_DIR


def _read_idx(path: str, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _UBYTE or dims != ndim:
        raise ValueError(f"{path}: not an IDX file of {ndim}-d unsigned bytes "
                         f"(magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = int(np.prod(shape))
    if len(data) != offset + count:
        raise ValueError(f"{path}: expected {count} data bytes for shape {shape}, "
                         f"found {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy()


def load_split(split: str, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``split`` in {"train", "test"} -> (images uint8 (N, 28, 28), labels uint8 (N,))."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = dataset_dir(path)
    img_name, lbl_name = _FILES[split]
    img_path, lbl_path = os.path.join(root, img_name), os.path.join(root, lbl_name)
    missing = [p for p in (img_path, lbl_path) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found (missing {', '.join(missing)}). Install it with:\n"
            f"    {INSTALL_HINT}\n"
            f"or point $FASHION_MNIST_DIR at a directory holding the four idx .gz files.")
    images = _read_idx(img_path, 3)
    labels = _read_idx(lbl_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{lbl_path}: label {labels.max()} out of range")
    return images, labels


def load(path: str | None = None):
    """((x_train, y_train), (x_test, y_test)) as uint8 numpy arrays."""
    return load_split("train", path), load_split("test", path)


if __name__ == "__main__":
    try:
        (xtr, ytr), (xte, yte) = load(sys.argv[1] if len(sys.argv) > 1 else None)
    except FileNotFoundError as e:
        sys.exit(str(e))
    print(f"train {xtr.shape} {xtr.dtype}, test {xte.shape}; "
          f"pixel mean/255 {xtr.mean() / 255:.4f} std/255 {xtr.std() / 255:.4f}")
    print("class counts (train):", np.bincount(ytr, minlength=10).tolist())
