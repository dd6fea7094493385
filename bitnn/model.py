"""Loading .bnb models and running them: ``bitnn.load(path).predict(x)``."""
from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bitnn import _core
from bitnn.errors import FormatError

_MODELS_DIR = Path(__file__).resolve().parent / "models"

# Defaults shared by the Python API and bitnn-run (bitnn/cli.py shows them).
CLASSIFY_TOP_K = 5
SAMPLING_DEFAULTS = {"max_new_tokens": 128, "temperature": 0.8, "top_k": 40, "top_p": 0.95,
                     "repetition_penalty": 1.0}


def bundled_models() -> dict[str, Path]:
    """Models that ship inside the package: name -> path."""
    if not _MODELS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(_MODELS_DIR.glob("*.bnb"))}


def resolve(path_or_name) -> Path:
    """A path to an existing file, or the name of a bundled model ("fashion" or "fashion.bnb")."""
    p = Path(os.fspath(path_or_name))
    if p.is_dir():
        raise IsADirectoryError(f"{str(p)!r} is a directory, not a .bnb model file")
    if p.exists():
        return p
    bundled = bundled_models()
    name = str(path_or_name)
    if name.endswith(".bnb") and os.sep not in name:
        name = name[:-4]
    if name in bundled:
        return bundled[name]
    known = ", ".join(bundled) or "none"
    raise FileNotFoundError(f"no model file {str(p)!r} and no bundled model of that name "
                            f"(bundled: {known})")


def load(path, threads: int | None = None, *, mmap: bool = True, kernel: str | None = None,
         precision: str = "fp32"):
    """Open a .bnb model (a path or a bundled name such as ``"fashion"``).

    ``threads``: threads for compute (default: BITNN_NUM_THREADS, else the
    CPUs this process may use). ``mmap=False`` reads the file into memory
    instead of mapping it. ``kernel`` forces a kernel (``"ref"``,
    ``"avx2"``, ...); default: BITNN_KERNEL or the best one for this CPU.
    ``precision``: ``"fp32"`` (exact, the default) or ``"int8"`` (the
    activations entering each binary layer are quantized to int8 and the sums
    are exact integers: faster, results differ slightly; docs/packing.md).
    The thread count, kernel and precision are resolved here, once; use
    :meth:`Model.set_threads` to change the thread count later.
    Raises :class:`bitnn.FormatError` for a malformed file.
    """
    threads_arg, kernel_arg = threads, kernel
    threads = _core.default_threads() if threads is None else threads
    _core.get_pool(threads)  # validates the count now, not at the first predict
    kernel = _core._resolve_kernel_name(kernel)
    _core.check_precision(precision)
    resolved = resolve(path)
    model = open_model(_core.BnbFile.open(str(resolved), mmap=mmap), threads, kernel, precision)
    # What pickling records (Model.__reduce__): a bundled name stays a name, so
    # that another installation finds its own copy; a path becomes absolute;
    # threads and kernel as given (None: the receiving machine's default).
    source = str(path) if not Path(os.fspath(path)).exists() else os.path.abspath(resolved)
    model._load_args = (source, threads_arg, mmap, kernel_arg, precision)
    model._loaded_threads = threads
    return model


def open_model(file, threads: int | None = None, kernel: str | None = None,
               precision: str = "fp32"):
    """The model of an open, validated ``_core.BnbFile`` (closed again on failure).

    ``bitnn.load`` and the exporter (which checks a file in memory before
    writing it) both go through here, so they apply the same rules.
    """
    try:
        return _from_file(file, threads, kernel, precision)
    except BaseException:
        file.close()
        raise


def _unpickle(source, threads, mmap, kernel, precision="fp32"):
    return load(source, threads, mmap=mmap, kernel=kernel, precision=precision)


def _from_file(file, threads=None, kernel=None, precision="fp32"):
    """The model of an open, validated BnbFile. The C builder checks the whole model
    description (docs/format.md 3.2) before anything here reads the header."""
    kind = _core.model_kind(file)
    if kind == "classifier":
        return ClassifierModel(file, threads, kernel, precision)
    if kind == "lm":
        return LanguageModel(file, threads, kernel, precision)
    raise FormatError(f"model.kind {kind!r} is not supported by this version of bitnn "
                      f"(known: 'classifier', 'lm')")


_live_models = weakref.WeakSet()


def _after_fork_in_child():
    # Threads of the parent that were inside a model's lock do not exist in
    # the child: give every model a fresh lock and no calls in flight.
    for m in list(_live_models):
        m._calls = 0
        m._calls_cv = threading.Condition(threading.Lock())


os.register_at_fork(after_in_child=_after_fork_in_child)


class Model:
    """Common part of loaded models: metadata, threads, life cycle."""

    def __init__(self, file, threads, kernel, precision="fp32"):
        # Subclasses build their C graph first: it validates the header, which is
        # read only after that.
        self._file = file
        self.threads = threads
        self.kernel = kernel
        self.precision = precision
        meta = file.meta
        self.meta = meta
        self.name = meta["model"].get("name")
        self.kind = meta["model"]["kind"]
        self._load_args = None          # set by load()
        self._calls = 0                 # compute calls in flight (close() waits for them)
        self._closing = False           # close() has begun: no new call may start
        self._calls_cv = threading.Condition(threading.Lock())
        _live_models.add(self)

    def set_threads(self, threads: int) -> None:
        """Use `threads` threads for the calls that start after this one."""
        _core.get_pool(threads)  # validates
        self.threads = threads

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def file_size(self) -> int:
        return self._file.file_size

    def close(self) -> None:
        """Release the file. Waits for compute calls running in other threads
        to finish; calls that start afterwards (including the next step of a
        streaming ``generate``) raise ValueError. The mapping itself goes when
        the last object using it (a generator still alive) goes."""
        with self._calls_cv:
            self._closing = True      # no new call starts from now on
            while self._calls:
                self._calls_cv.wait()
            self._file.close()

    @contextmanager
    def _in_use(self):
        """Marks one compute call in flight; ValueError if the model is closed."""
        with self._calls_cv:
            if self._closing:
                raise ValueError("the model is closed")
            self._check_open()
            self._calls += 1
        try:
            yield
        finally:
            with self._calls_cv:
                self._calls -= 1
                if not self._calls:
                    self._calls_cv.notify_all()

    def __reduce__(self):
        """Pickles as (path or bundled name, threads, mmap, kernel, precision);
        unpickling reopens the file, so the file's bytes are not copied."""
        if self._load_args is None:
            raise TypeError("only models opened with bitnn.load can be pickled")
        self._check_open()
        source, threads, mmap, kernel, precision = self._load_args
        if self.threads != self._loaded_threads:     # set_threads() since
            threads = self.threads
        return (_unpickle, (source, threads, mmap, kernel, precision))

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


# Images per forward call are capped so that Ctrl-C is seen between chunks and
# the float copy of a huge uint8 batch is never made all at once.
_CHUNK_FLOATS = 1 << 20


def _is_pil_image(x) -> bool:
    """A PIL.Image.Image, recognised without importing Pillow."""
    return hasattr(x, "getbands") and hasattr(x, "mode") and hasattr(x, "convert")


def _is_picture(x) -> bool:
    return isinstance(x, (str, os.PathLike)) or _is_pil_image(x)


class ClassifierModel(Model):
    """A binary normalized CNN image classifier (docs/maths.md, The image classifier)."""

    def __init__(self, file, threads=None, kernel=None, precision="fp32"):
        self._graph = _core.Classifier(file)  # validates the model description
        super().__init__(file, threads, kernel, precision)
        self._graph.precision = precision
        H, W, C = self._graph.input_shape
        self.input_shape = (C, H, W)
        self.labels = self._graph.labels or [str(i) for i in range(self._graph.classes)]
        self.preprocess = self._graph.preprocess  # float32 values (docs/arithmetic.md)
        cal = self.meta.get("calibration")
        # the C builder checked it: {"temperature": a finite number > 0, ...}
        self.temperature = float(cal["temperature"]) if cal is not None else None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def max_probability(self) -> float | None:
        """The largest probability ``predict`` can return (uncalibrated), or None when
        the last layer is not a softmax.

        The last layer's Normalize makes the n scores have mean 0 and variance
        (at most) 1, so the softmax peaks when one score is sqrt(n-1) and the
        others -1/sqrt(n-1): about 0.757 for 10 classes (PAPER.md section 2).
        """
        if self.meta["layers"][-1].get("activation") != "softmax":
            return None
        n = self._graph.classes
        if n < 2:
            return 1.0
        r = math.sqrt(n - 1)
        return 1.0 / (1.0 + (n - 1) * math.exp(-1.0 / r - r))

    def _pictures(self, x):
        """Paths / PIL images (one or a list) -> uint8 NHWC fitted to the input, else None."""
        from bitnn.imageio import load_image

        C, H, W = self.input_shape
        if _is_picture(x):
            return load_image(x, C, H, W)[None]
        if isinstance(x, (list, tuple)) and x and all(_is_picture(v) for v in x):
            return np.stack([load_image(v, C, H, W) for v in x])
        return None

    def _batch(self, x, layout):
        """(a (N, ...) array, its layout "NCHW"/"NHWC") after the shape rules of predict."""
        C, H, W = self.input_shape
        pics = self._pictures(x)
        if pics is not None:
            return pics, "NHWC"
        a = np.asarray(x)
        if (a.dtype == object or a.dtype.kind not in "uf"
                or (a.dtype.kind == "u" and a.dtype != np.uint8)):
            raise TypeError(f"images must be uint8 or float pixels (or float already "
                            f"preprocessed, with preprocessed=True), a path or a PIL image; "
                            f"got dtype {a.dtype}")
        if layout is not None and layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        if a.ndim == 2 and C == 1 and a.shape == (H, W):
            return a[None, :, :, None], "NHWC"
        if a.ndim == 3 and C == 1 and a.shape[1:] == (H, W) and layout is None:
            return a[:, :, :, None], "NHWC"  # a batch of grey images (N, H, W)
        if a.ndim == 3:
            a = a[None]
        elif a.ndim != 4:
            raise ValueError(f"expected an image (C,H,W)/(H,W,C) or a batch (N,C,H,W)/(N,H,W,C)"
                             f"{'/(N,H,W)' if C == 1 else ''}, got shape {np.shape(x)}")
        if a.shape[0] == 0:
            return a, layout or "NHWC"
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
            raise ValueError(f"layout {layout} needs images of shape {want}, "
                             f"got {tuple(a.shape[1:])}")
        return a, layout

    def _check_statistics(self, a, preprocessed):
        """Warn when the values clearly are not what the chosen contract expects."""
        if a.dtype == np.uint8:
            if preprocessed:
                raise TypeError("preprocessed=True needs float input (uint8 is always pixels)")
            return
        # min and max propagate NaN and show infinities: one pass each, no
        # boolean copy of the batch as np.isfinite(a).all() would make
        lo, hi = float(a.min()), float(a.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("images contain NaN or infinity")
        p = self.preprocess
        top = 255.0 * p["scale"]  # what the brightest pixel becomes before mean/std
        if not preprocessed:
            if p["scale"] < 0.5 and 0.0 < hi <= 1.0 and lo >= 0.0:
                warnings.warn(
                    f"float pixels all in [{lo:.3g}, {hi:.3g}], but this model expects pixel "
                    f"values 0..255 (it applies x * {p['scale']:.6g}, then mean/std): scale "
                    "them back (x * 255), or pass preprocessed=True if they are already "
                    "normalized for the model", UserWarning, stacklevel=3)
            elif lo < 0:
                warnings.warn(
                    f"float pixels below 0 (min {lo:.3g}): predict applies the model's "
                    "preprocessing to pixels; pass preprocessed=True for tensors that are "
                    "already normalized", UserWarning, stacklevel=3)
        else:
            ends = [(v - m) / s for m, s in zip(p["mean"], p["std"]) for v in (0.0, top)]
            reach = max(abs(v) for v in ends)
            # whole numbers >= 0 far beyond what preprocessing gives: pixel values
            if lo >= 0 and hi > max(2.0, 10 * reach) and np.array_equal(a, np.rint(a)):
                warnings.warn(
                    f"preprocessed=True but the values are whole numbers up to {hi:.3g}, while "
                    f"the model's preprocessing gives values within +-{reach:.3g}: these look "
                    "like raw pixels; leave preprocessed=False", UserWarning, stacklevel=3)

    def _to_float(self, a, layout, preprocessed):
        """float32 of a chunk, preprocessed unless it already is, and its layout:
        preprocessed NCHW stays NCHW (the C graph turns it into NHWC faster than
        numpy's transposing copy), the rest is made NHWC."""
        if preprocessed:
            return np.ascontiguousarray(a, dtype=np.float32), layout
        if layout == "NCHW":
            a = a.transpose(0, 2, 3, 1)
        p = self.preprocess
        mean = np.asarray(p["mean"], dtype=np.float32)
        std = np.asarray(p["std"], dtype=np.float32)
        x = (a.astype(np.float32) * np.float32(p["scale"]) - mean) / std
        return np.ascontiguousarray(x), "NHWC"

    def predict(self, x, layout: str | None = None, *, preprocessed: bool = False,
                calibrated: bool = False) -> np.ndarray:
        """Class probabilities ``(N, classes)``.

        ``x``: one image or a batch: a numpy array of pixels (uint8 or float in
        0..255; the file's preprocessing is applied), a path to an image file,
        a PIL image, or a list of paths / PIL images (read, converted and
        resized by :func:`bitnn.imageio.load_image`). Arrays may be NCHW or
        NHWC; the layout is inferred from the model's input shape when
        unambiguous, else pass ``layout="NCHW"`` or ``"NHWC"``. One-channel
        models also take an ``(H, W)`` image or an ``(N, H, W)`` batch.

        ``preprocessed=True``: ``x`` is float and already normalized as the
        model expects; it is used as is. A UserWarning says when the values
        clearly do not fit the contract chosen (float pixels all in [0, 1],
        say). ``calibrated=True``: probabilities with the temperature stored
        at export (``export(..., calibration=...)``); the ranking is the same.
        """
        self._check_open()
        a, layout = self._batch(x, layout)
        if a.shape[0] == 0:
            raise ValueError("empty batch: pass at least one image")
        self._check_statistics(a, preprocessed)
        if calibrated and self.temperature is None:
            raise ValueError("this model has no calibration: export it with "
                             "bitnn.export(..., calibration=(x_val, y_val)) to store one")
        N = a.shape[0]
        chunk = max(1, _CHUNK_FLOATS // math.prod(self.input_shape))
        out = np.empty((N, self._graph.classes), dtype=np.float32)
        with self._in_use():
            for i in range(0, N, chunk):  # Python runs signal handlers (Ctrl-C) between chunks
                part, part_layout = self._to_float(a[i:i + chunk], layout, preprocessed)
                out[i:i + chunk] = self._graph.forward(part, threads=self.threads,
                                                       kernel=self.kernel, layout=part_layout)
        return apply_temperature(out, self.temperature) if calibrated else out

    def classify(self, x, top_k: int = CLASSIFY_TOP_K, layout: str | None = None, *,
                 preprocessed: bool = False, calibrated: bool = False):
        """[[(label, probability), ...] top_k per image]; ``x`` as for :meth:`predict`."""
        top_k = _check_int("top_k", top_k, 1)
        probs = self.predict(x, layout, preprocessed=preprocessed, calibrated=calibrated)
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(p[j])) for j in row] for p, row in zip(probs, order)]

    def summary(self) -> str:
        """A table of the layers, their output shapes and parameter counts."""
        C, H, W = self.input_shape
        lines = [f"{self.name or 'classifier'}: input {C}x{H}x{W}, {self.num_classes} classes, "
                 f"eps {self._graph.eps:g}, file {self.file_size:,} bytes, "
                 f"precision {self.precision}",
                 f"{'#':>3}  {'layer':<34}{'output':>16}{'params':>12}"]
        total = 0
        for i, ly in enumerate(self._graph.layers):
            t, cin, cout, (h, w) = ly["type"], ly["in"], ly["out"], ly["in_hw"]
            params = 0
            if t == "conv2d":
                k = ly["kernel_size"]
                shape = (cout, h, w)
                params = cout * (k * k * cin + 1)
                desc = f"conv2d {k}x{k} {cin}->{cout} {ly['activation']} norm={ly['norm']}"
            elif t == "maxpool2d":
                s = ly["size"]
                shape = (cout, h // s, w // s)
                desc = f"maxpool2d {s}x{s}"
            elif t == "global_avg_pool":
                shape = (cout,)
                desc = "global_avg_pool"
            elif t == "flatten":
                shape = (cout,)
                desc = "flatten"
            else:
                shape = (cout,)
                params = cout * (cin + 1)
                desc = f"linear {cin}->{cout} {ly['activation']}"
            total += params
            lines.append(f"{i:>3}  {desc:<34}{'x'.join(map(str, shape)):>16}{params:>12,}")
        lines.append(f"total {total:,} binary parameters ({total / 8 / 1024:.1f} KiB of bits)")
        return "\n".join(lines)

    def __repr__(self):
        C, H, W = self.input_shape
        state = "closed" if self.closed else f"{self.num_classes} classes"
        return f"<bitnn ClassifierModel {self.name!r} {C}x{H}x{W} -> {state}>"


# Tokens the repetition penalty looks back over (llama.cpp's repeat_last_n).
REPEAT_LAST_N = 64


def _check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        span = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be {span}, got {value}")
    return int(value)


def _check_float(name, value, ok, what):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Softmax probabilities recomputed at ``temperature``: ``softmax(log(p) / T)``.

    Since ``log(softmax(z)) = z - logsumexp(z)``, this equals ``softmax(z / T)``
    of the scores ``z`` the probabilities came from; the ranking is unchanged.
    """
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logp = np.log(p) / float(temperature)
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _softmax(scores):
    """predict()'s distribution (docs/arithmetic.md): exp(s - max) in float64 with the C
    library's exp (math.exp), over their exactly rounded sum (math.fsum), rounded once."""
    s = scores.astype(np.float64)
    e = np.array([math.exp(v) for v in (s - s.max()).tolist()])
    return (e / math.fsum(e)).astype(np.float32)


class LanguageModel(Model):
    """A binary GPT-style decoder (docs/maths.md, The language decoder) with its tokenizer.

    Generation keeps a KV cache: the prompt goes through the network in one
    batched pass, then one token at a time. When the context is full
    (``ctx_size``, at most the model's ``max_len``) the default
    ``context_overflow="slide"`` keeps the last half of the tokens, re-reads
    them from position 0 and goes on; ``"stop"`` ends generation instead.
    Positions past ``max_len`` are never used.
    """

    def __init__(self, file, threads=None, kernel=None, precision="fp32"):
        self._graph = _core.LMGraph(file)  # validates the model description and tokenizer
        super().__init__(file, threads, kernel, precision)
        self._graph.precision = precision
        cfg = self._graph.config
        self.config = cfg
        self.vocab_size = cfg["vocab_size"]
        self.max_len = cfg["max_len"]
        core_tok = self._graph.take_tokenizer()  # built in C from the parsed header
        self.tokenizer = None
        if core_tok is not None:
            from bitnn.tokenizer import Tokenizer

            spec = self.meta["tokenizer"]
            self.tokenizer = Tokenizer._adopt(core_tok,
                                              lambda: json.dumps(spec, ensure_ascii=False))
        self.last_seed = None
        self.last_stats = None

    # ------------------------------------------------------------ tokens
    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model was exported without a tokenizer: pass token ids")
        return self.tokenizer

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._need_tokenizer().encode(text)

    def detokenize(self, ids) -> str:
        """Text of token ids (byte-level: exact; invalid UTF-8 at the end becomes U+FFFD)."""
        return self._need_tokenizer().decode(self._check_ids(ids, "ids", allow_empty=True))

    def _check_ids(self, ids, name="prompt", allow_empty=False):
        a = np.asarray(ids)
        if a.dtype == object or (a.size and a.dtype.kind not in "iu"):
            raise ValueError(f"{name} must be token ids (integers)")
        a = a.reshape(-1).astype(np.int64)
        if not allow_empty and a.size == 0:
            raise ValueError(f"{name} is empty: give at least one token")
        bad = a[(a < 0) | (a >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"token id {int(bad[0])} is out of the vocabulary "
                             f"(0..{self.vocab_size - 1})")
        return [int(v) for v in a]

    # ----------------------------------------------------------- predict
    def predict(self, ids) -> np.ndarray:
        """Next-token probabilities ``(B, vocab)`` after the last position of each sequence.

        ``ids``: one sequence (list of ints) or a batch (list of lists, or a 2-D
        array); sequences may differ in length, each at most ``max_len``.
        """
        self._check_open()
        if isinstance(ids, (str, bytes, bytearray)):
            raise TypeError("predict takes token ids, not text: pass lm.tokenize(text) "
                            "(or a list of such lists for a batch)")
        if isinstance(ids, np.ndarray) and ids.ndim == 2:
            seqs = list(ids)
        elif isinstance(ids, (list, tuple)) and ids and all(
                isinstance(s, (list, tuple, np.ndarray)) for s in ids):
            seqs = list(ids)
        else:
            seqs = [ids]
        if not seqs:
            raise ValueError("empty batch")
        out = np.empty((len(seqs), self.vocab_size), dtype=np.float32)
        for i, seq in enumerate(seqs):
            seq = self._check_ids(seq, "sequence")
            if len(seq) > self.max_len:
                raise ValueError(f"a sequence of {len(seq)} tokens is longer than the model's "
                                 f"max_len {self.max_len}")
            state = self._graph.new_state(len(seq))
            with self._in_use():
                out[i] = _softmax(state.forward(seq, threads=self.threads, kernel=self.kernel))
        return out

    # -------------------------------------------------------- perplexity
    def perplexity(self, text_or_ids, ctx_size: int | None = None, stride: int | None = None,
                   *, progress=None):
        """Perplexity and bits per byte of a text (a str) or of token ids.

        Windows of ``ctx_size`` tokens (default: ``max_len``), each scoring the
        tokens after its first ``ctx_size - stride`` (default stride:
        ``ctx_size // 2``; the first window scores all its tokens but the
        first): every token but the first is scored once. Returns a frozen
        :class:`bitnn.perplexity.PerplexityResult` (``nll``, ``perplexity``,
        ``bits_per_byte``, ``tokens``, ``bytes``, ...); the windowing and the
        definitions are in :mod:`bitnn.perplexity`. ``progress(done, total)``
        is called after each window.
        """
        from bitnn.perplexity import evaluate

        return evaluate(self, text_or_ids, ctx_size, stride, progress)

    # ---------------------------------------------------------- generate
    def generate(self, prompt, max_new_tokens: int = SAMPLING_DEFAULTS["max_new_tokens"], *,
                 temperature: float = SAMPLING_DEFAULTS["temperature"],
                 top_k: int = SAMPLING_DEFAULTS["top_k"], top_p: float = SAMPLING_DEFAULTS["top_p"],
                 repetition_penalty: float = SAMPLING_DEFAULTS["repetition_penalty"],
                 seed: int | None = None, stop=None, stream: bool = False,
                 ctx_size: int | None = None, context_overflow: str = "slide"):
        """Continue ``prompt``.

        ``prompt``: a str (needs the model's tokenizer) or a list of token ids.
        With a str, returns the new text (``stream=True``: an iterator of text
        pieces, each complete UTF-8); with ids, returns the new ids (or an
        iterator of ids). ``temperature=0`` is greedy; ``top_k=0`` and
        ``top_p=1`` switch those filters off; ``repetition_penalty`` (> 0, 1 =
        off) applies to the last 64 tokens. ``seed=None`` draws a random seed,
        kept in ``self.last_seed``; the same seed gives the same output for any
        thread count. ``stop``: a str or list of str; generation ends before the
        first occurrence (text prompts only). Timings of the last call are in
        ``self.last_stats``.
        """
        self._check_open()
        text_mode = isinstance(prompt, str)
        if isinstance(prompt, (bytes, bytearray)):
            raise TypeError("the prompt must be a str (text) or a list of token ids, not bytes: "
                            "decode it first, e.g. prompt.decode('utf-8')")
        if text_mode:
            tok = self._need_tokenizer()
            if prompt == "":
                raise ValueError("the prompt is empty: give at least one character")
            ids = tok.encode(prompt)
        else:
            ids = self._check_ids(prompt)
        max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 0)
        temperature = _check_float("temperature", temperature, lambda v: v >= 0, "a number >= 0")
        top_k = _check_int("top_k", top_k, 0)
        top_p = _check_float("top_p", top_p, lambda v: 0 < v <= 1, "in (0, 1]")
        repetition_penalty = _check_float("repetition_penalty", repetition_penalty,
                                          lambda v: v > 0, "a positive number")
        ctx = (self.max_len if ctx_size is None
               else _check_int("ctx_size", ctx_size, 2, self.max_len))
        if context_overflow not in ("slide", "stop"):
            raise ValueError("context_overflow must be 'slide' or 'stop'")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        seed = _check_int("seed", seed, 0, 2**64 - 1)
        stops = [] if stop is None else ([stop] if isinstance(stop, str) else list(stop))
        if stops and not text_mode:
            raise ValueError("stop strings need a text prompt")
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError("stop must be a non-empty str or a list of them")
        if not ids:
            raise ValueError("the prompt encodes to no tokens")
        if len(ids) > ctx:
            ids = ids[-ctx:] if context_overflow == "slide" else None
            if ids is None:
                raise ValueError(f"the prompt has more tokens than the context ({ctx})")
        self.last_seed = seed
        sampler = _core.Sampler(self.vocab_size, temperature, top_k, top_p, repetition_penalty,
                                seed)
        steps = self._steps(ids, max_new_tokens, sampler, ctx, context_overflow)
        if not text_mode:
            return steps if stream else list(steps)
        pieces = self._text_pieces(steps, stops, ids)
        return pieces if stream else "".join(pieces)

    def _forward(self, state, ids):
        with self._in_use():
            return state.forward(ids, threads=self.threads, kernel=self.kernel)

    def _steps(self, ids, max_new_tokens, sampler, ctx, overflow):
        """Yield new token ids; fills self.last_stats."""
        stats = {"prompt_tokens": len(ids), "prompt_seconds": 0.0, "generated_tokens": 0,
                 "generation_seconds": 0.0, "context_shifts": 0}
        self.last_stats = stats
        if max_new_tokens == 0:
            return
        state = self._graph.new_state(ctx)
        history = list(ids)
        t0 = time.perf_counter()
        scores = self._forward(state, ids)
        stats["prompt_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(max_new_tokens):
            nxt = sampler.sample(scores, history[-REPEAT_LAST_N:])
            history.append(nxt)
            stats["generated_tokens"] += 1
            stats["generation_seconds"] = time.perf_counter() - t0
            yield nxt
            if i + 1 == max_new_tokens:
                break
            if state.pos >= ctx:
                if overflow == "stop":
                    return
                keep = history[-(ctx // 2):]
                state.reset()
                stats["context_shifts"] += 1
                scores = self._forward(state, keep)
            else:
                scores = self._forward(state, [nxt])
        stats["generation_seconds"] = time.perf_counter() - t0

    def _text_pieces(self, steps, stops, prompt_ids):
        """Text pieces from ids: complete UTF-8 only, cut before a stop string.

        The decoder first reads the prompt's ids (their text is dropped), so the
        pieces are exactly what ``detokenize(prompt_ids + new_ids)`` adds to
        ``detokenize(prompt_ids)`` (a WordPiece "##" piece joins the prompt's
        last word; any other token after the prompt starts with its space).
        """
        dec = self.tokenizer.stream()
        dec.feed(list(prompt_ids))
        held = ""  # text that might be the start of a stop string
        longest = max((len(s) for s in stops), default=0)
        for nxt in steps:
            held += dec.feed([nxt])
            if stops:
                cut = min((held.find(s) for s in stops if s in held), default=-1)
                if cut >= 0:
                    if held[:cut]:
                        yield held[:cut]
                    steps.close()
                    return
                safe = len(held) - (longest - 1)
                if safe > 0:
                    yield held[:safe]
                    held = held[safe:]
            elif held:
                yield held
                held = ""
        held += dec.flush()
        if stops:
            cut = min((held.find(s) for s in stops if s in held), default=-1)
            if cut >= 0:
                held = held[:cut]
        if held:
            yield held

    def summary(self) -> str:
        c = self.config
        params = self._param_count()
        return (f"{self.name or 'lm'}: {c['num_blocks']} blocks, emb_dim {c['emb_dim']}, "
                f"{c['num_heads']} heads, ff_dim {c['ff_dim']}, "
                f"mlp {self._graph.mlp_units}, vocab {c['vocab_size']}, "
                f"max_len {c['max_len']}, {params:,} binary parameters, "
                f"file {self.file_size:,} bytes, precision {self.precision}"
                + (f", tokenizer {self.tokenizer.kind}" if self.tokenizer else ", no tokenizer"))

    def _param_count(self) -> int:
        total = 0
        for name in self._file.tensor_names:
            shape = self.meta["tensors"][name]["shape"]
            total += int(np.prod(shape))
        return total

    def __repr__(self):
        return (f"<bitnn LanguageModel {self.name!r} vocab {self.vocab_size}, "
                f"max_len {self.max_len}{', closed' if self.closed else ''}>")
