"""Loading .bnb models and running them: ``bitnn.load(path).predict(x)``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bitnn import _core
from bitnn.errors import FormatError

_MODELS_DIR = Path(__file__).resolve().parent / "models"


def bundled_models() -> dict[str, Path]:
    """Models that ship inside the package: name -> path."""
    if not _MODELS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(_MODELS_DIR.glob("*.bnb"))}


def resolve(path_or_name) -> Path:
    """A path to an existing file, or the name of a bundled model."""
    p = Path(os.fspath(path_or_name))
    if p.exists():
        return p
    bundled = bundled_models()
    if str(path_or_name) in bundled:
        return bundled[str(path_or_name)]
    known = ", ".join(bundled) or "none"
    raise FileNotFoundError(f"no model file {str(p)!r} and no bundled model of that name "
                            f"(bundled: {known})")


def load(path, threads: int | None = None, *, mmap: bool = True, kernel: str | None = None):
    """Open a .bnb model (a path or a bundled name such as ``"fashion"``).

    ``threads``: threads for compute (default: BITNN_NUM_THREADS, else the
    CPUs this process may use). ``mmap=False`` reads the file into memory
    instead of mapping it. ``kernel`` forces a kernel (``"ref"``,
    ``"avx2"``, ...); default: BITNN_KERNEL or the best one for this CPU.
    Raises :class:`bitnn.FormatError` for a malformed file.
    """
    if threads is not None:
        _core.get_pool(threads)  # validates the count now, not at the first predict
    if kernel is not None:
        _core._resolve_kernel_name(kernel)
    file = _core.BnbFile.open(str(resolve(path)), mmap=mmap)
    try:
        kind = (file.meta.get("model") or {}).get("kind")
        if kind == "classifier":
            return ClassifierModel(file, threads, kernel)
        raise FormatError(f"model kind {kind!r} is not supported by this version of bitnn")
    except BaseException:
        file.close()
        raise


class Model:
    """Common part of loaded models: metadata, threads, life cycle."""

    def __init__(self, file, threads, kernel):
        self._file = file
        self.threads = threads
        self.kernel = kernel
        meta = file.meta
        self.meta = meta
        self.name = (meta.get("model") or {}).get("name")
        self.kind = (meta.get("model") or {}).get("kind")

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def file_size(self) -> int:
        return self._file.file_size

    def close(self) -> None:
        """Release the file (unmaps it). Further calls raise ValueError."""
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self):
        if self._file.closed:
            raise ValueError("the model is closed")


class ClassifierModel(Model):
    """A binary normalized CNN image classifier (PAPER.md Alg. 7)."""

    def __init__(self, file, threads=None, kernel=None):
        super().__init__(file, threads, kernel)
        self._graph = _core.Classifier(file)
        inp = self.meta["input"]
        self.input_shape = (inp["channels"], inp["height"], inp["width"])  # (C, H, W)
        self.labels = list(self.meta.get("labels") or [str(i) for i in range(self._graph.classes)])
        pre = inp.get("preprocess") or {}
        C = self.input_shape[0]
        self.preprocess = {"scale": float(pre.get("scale", 1.0 / 255.0)),
                           "mean": [float(v) for v in pre.get("mean", [0.0] * C)],
                           "std": [float(v) for v in pre.get("std", [1.0] * C)]}
        if (len(self.preprocess["mean"]) != C or len(self.preprocess["std"]) != C
                or not all(s > 0 for s in self.preprocess["std"])):
            raise FormatError(f"input.preprocess needs mean and positive std for {C} channels")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def _to_nhwc(self, x, layout):
        C, H, W = self.input_shape
        a = np.asarray(x)
        if a.dtype == object or a.dtype.kind not in "uf" or (a.dtype.kind == "u" and a.dtype != np.uint8):
            raise TypeError(f"images must be uint8 (raw pixels) or float (preprocessed), "
                            f"got dtype {a.dtype}")
        if layout is not None and layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        if a.ndim == 2 and C == 1 and a.shape == (H, W):
            a = a[None, :, :, None]
            layout = "NHWC"
        elif a.ndim == 3:
            a = a[None]
        elif a.ndim != 4:
            raise ValueError(f"expected an image (C,H,W)/(H,W,C) or a batch (N,C,H,W)/(N,H,W,C), "
                             f"got shape {np.shape(x)}")
        if a.shape[0] == 0:
            raise ValueError("empty batch: pass at least one image")
        nchw = a.shape[1:] == (C, H, W)
        nhwc = a.shape[1:] == (H, W, C)
        if layout is None:
            if nchw and nhwc:
                raise ValueError(f"shape {np.shape(x)} is ambiguous for input {C}x{H}x{W}: "
                                 "pass layout='NCHW' or layout='NHWC'")
            if not (nchw or nhwc):
                raise ValueError(f"image shape {tuple(a.shape[1:])} matches neither (C,H,W) = "
                                 f"{(C, H, W)} nor (H,W,C) = {(H, W, C)}")
            layout = "NCHW" if nchw else "NHWC"
        elif (layout == "NCHW" and not nchw) or (layout == "NHWC" and not nhwc):
            want = (C, H, W) if layout == "NCHW" else (H, W, C)
            raise ValueError(f"layout {layout} needs images of shape {want}, got {tuple(a.shape[1:])}")
        if layout == "NCHW":
            a = a.transpose(0, 2, 3, 1)
        if a.dtype == np.uint8:
            p = self.preprocess
            mean = np.asarray(p["mean"], dtype=np.float32)
            std = np.asarray(p["std"], dtype=np.float32)
            a = (a.astype(np.float32) * np.float32(p["scale"]) - mean) / std
        else:
            a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise ValueError("images contain NaN or infinity")
        return np.ascontiguousarray(a, dtype=np.float32)

    def predict(self, x, layout: str | None = None) -> np.ndarray:
        """Class probabilities ``(N, classes)``.

        ``x``: one image or a batch, uint8 (raw pixels: the file's
        preprocessing is applied) or float (used as is), NCHW or NHWC; the
        layout is inferred from the model's input shape when unambiguous,
        else pass ``layout="NCHW"`` or ``"NHWC"``. A single ``(H, W)`` image is
        accepted for one-channel models.
        """
        self._check_open()
        a = self._to_nhwc(x, layout)
        return self._graph.forward(a, threads=self.threads, kernel=self.kernel)

    def classify(self, x, top_k: int = 5, layout: str | None = None):
        """[[(label, probability), ...] top_k per image]."""
        probs = self.predict(x, layout)
        k = max(1, min(int(top_k), probs.shape[1]))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(p[j])) for j in row] for p, row in zip(probs, order)]

    def summary(self) -> str:
        """A table of the layers, their output shapes and parameter counts."""
        C, H, W = self.input_shape
        lines = [f"{self.name or 'classifier'}: input {C}x{H}x{W}, {self.num_classes} classes, "
                 f"eps {self.meta['eps']:g}, file {self.file_size:,} bytes",
                 f"{'#':>3}  {'layer':<34}{'output':>16}{'params':>12}"]
        total = 0
        shape = (C, H, W)
        for i, ly in enumerate(self.meta["layers"]):
            t = ly["type"]
            params = 0
            if t == "conv2d":
                k = ly["kernel_size"]
                shape = (ly["out_channels"], shape[1], shape[2])
                params = ly["out_channels"] * (k * k * ly["in_channels"] + 1)
                desc = (f"conv2d {k}x{k} {ly['in_channels']}->{ly['out_channels']} "
                        f"{ly.get('activation', 'linear')} norm={ly.get('norm', 'chw')}")
            elif t == "maxpool2d":
                s = ly["size"]
                shape = (shape[0], shape[1] // s, shape[2] // s)
                desc = f"maxpool2d {s}x{s}"
            elif t == "global_avg_pool":
                shape = (shape[0],)
                desc = "global_avg_pool"
            else:
                shape = (ly["out_features"],)
                params = ly["out_features"] * (ly["in_features"] + 1)
                desc = (f"linear {ly['in_features']}->{ly['out_features']} "
                        f"{ly.get('activation', 'linear')}")
            total += params
            lines.append(f"{i:>3}  {desc:<34}{'x'.join(map(str, shape)):>16}{params:>12,}")
        lines.append(f"total {total:,} binary parameters ({total / 8 / 1024:.1f} KiB of bits)")
        return "\n".join(lines)

    def __repr__(self):
        C, H, W = self.input_shape
        state = "closed" if self.closed else f"{self.num_classes} classes"
        return f"<bitnn ClassifierModel {self.name!r} {C}x{H}x{W} -> {state}>"
