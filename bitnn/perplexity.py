"""Perplexity of a language model on a text: ``LanguageModel.perplexity`` and
``bitnn-run perplexity``.

Windowing (ids ``x[0..N)``, context ``C = ctx_size``, ``S = stride``): window
``k`` starts at ``s = k*S``, feeds the tokens ``x[s .. s+C)`` (cut at
``x[N-2]``) from position 0 and predicts the tokens after them,
``x[s+1 .. s+C]``. The first window scores all its predictions, ``x[1]`` to
``x[C]``; every later window scores only the predictions no window has scored
yet, its last ``S``, so each of those tokens has at least ``C - S + 1``
tokens of context. Windows go on until ``x[N-1]`` is scored: every token but
the first is scored exactly once. ``S = C`` gives non-overlapping windows
(context restarting every ``C`` tokens, as ``tools/train_lm.py`` validates);
the default ``S = C // 2`` costs about twice the work and gives every token
but those of the first window at least half a context.

Figures: ``nll`` is the mean negative log-likelihood (nats) of the scored
tokens, ``perplexity = exp(nll)``, and ``bits_per_byte = nll * tokens /
ln(2) / bytes``, where ``bytes`` is the number of bytes the scored tokens
stand for in the model's tokenizer (the sum of their ``token_bytes``). For a
byte-level BPE tokenizer that is the UTF-8 length of the text less its first
token, which is never scored, and the same whether the text or its ids are
given; bits per byte does not depend on the vocabulary, so models with
different tokenizers compare. A model without a tokenizer has ``bytes`` and
``bits_per_byte`` None.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["PerplexityResult", "windows", "evaluate"]


@dataclass(frozen=True)
class PerplexityResult:
    """What ``LanguageModel.perplexity`` measured (see the module docstring)."""

    nll: float                   # mean negative log-likelihood per scored token, nats
    perplexity: float            # exp(nll)
    bits_per_byte: float | None  # nll * tokens / ln 2 / bytes; None without a tokenizer
    tokens: int                  # tokens scored: all but the first
    bytes: int | None            # bytes the scored tokens stand for; None without a tokenizer
    ctx_size: int                # window length in tokens
    stride: int                  # tokens scored per window after the first
    windows: int                 # forward passes


def windows(n_tokens: int, ctx_size: int, stride: int):
    """``[(start, end, first)]``: each window feeds ids[start:end], predicts
    ids[start+1:end+1] and scores those from row ``first`` on."""
    out, scored, start = [], 0, 0  # scored: index of the last token scored so far
    while True:
        end = min(start + ctx_size, n_tokens - 1)
        out.append((start, end, scored - start))
        scored = end
        if end == n_tokens - 1:
            return out
        start += stride


def _check_size(name, value, lo, hi, hi_what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be from {lo} to {hi} ({hi_what}), got {value}")
    return int(value)


def evaluate(model, text_or_ids, ctx_size=None, stride=None, progress=None) -> PerplexityResult:
    """``model.perplexity``: arguments checked here, windows scored by the C core."""
    model._check_open()
    if isinstance(text_or_ids, str):
        ids = model._need_tokenizer().encode(text_or_ids)
        what = "the text"
    elif isinstance(text_or_ids, (list, tuple, np.ndarray)):
        a = np.asarray(text_or_ids)
        if a.size and (a.dtype == object or a.dtype.kind not in "iu"):
            raise TypeError(f"token ids must be integers, got {a.dtype} values")
        if a.ndim > 1:
            raise ValueError(f"token ids must be one sequence, got shape {a.shape}")
        ids = model._check_ids(a, "ids", allow_empty=True)
        what = "the ids"
    else:
        raise TypeError(f"perplexity takes a str or a sequence of token ids, not "
                        f"{type(text_or_ids).__name__}")
    n = len(ids)
    if n < 2:
        raise ValueError(f"{what} must have at least 2 tokens to score one (got {n})")
    ctx = model.max_len if ctx_size is None else _check_size(
        "ctx_size", ctx_size, 1, model.max_len, "the model's max_len")
    stride = max(1, ctx // 2) if stride is None else _check_size(
        "stride", stride, 1, ctx, "ctx_size")
    plan = windows(n, ctx, stride)
    ids = np.asarray(ids, dtype=np.int32)
    state = model._graph.new_state(ctx)
    total = 0.0
    targets = []
    for k, (start, end, first) in enumerate(plan):
        state.reset()
        lp = state.logprobs(ids[start:end + 1], first, threads=model.threads,
                            kernel=model.kernel)
        total -= math.fsum(lp)
        targets.append(ids[start + 1 + first:end + 1])
        if progress is not None:
            progress(k + 1, len(plan))
    scored = np.concatenate(targets)
    tokens = len(scored)
    assert tokens == n - 1, (tokens, n)
    nll = total / tokens
    nbytes = bpb = None
    if model.tokenizer is not None:
        uniq, counts = np.unique(scored, return_counts=True)
        nbytes = sum(len(model.tokenizer.token_bytes(int(t))) * int(c)
                     for t, c in zip(uniq, counts) if t < model.tokenizer.vocab_size)
        bpb = total / math.log(2) / nbytes if nbytes else None
    return PerplexityResult(nll=nll, perplexity=math.exp(nll), bits_per_byte=bpb, tokens=tokens,
                            bytes=nbytes, ctx_size=ctx, stride=stride, windows=len(plan))


# ---------------------------------------------------------------- command line

def add_parser(subparsers, default_model: str):
    """``bitnn-run perplexity``: add its parser to an argparse subparsers object."""
    from bitnn.cli import add_compute_args, add_model_arg

    p = subparsers.add_parser(
        "perplexity", help="perplexity and bits per byte of a language model on a text file",
        description="Score every token of a UTF-8 text file but the first with a language model: "
                    "windows of -c tokens, each scoring its last --stride predictions (the first "
                    "window all of them). The figures go to stdout, a progress bar to stderr.")
    add_model_arg(p, default_model)
    p.add_argument("-f", "--file", required=True, help="the UTF-8 text to score")
    p.add_argument("-c", "--ctx-size", type=int, default=None,
                   help="window length in tokens (default: the model's max_len)")
    p.add_argument("--stride", type=int, default=None,
                   help="tokens scored per window after the first, 1..ctx-size; ctx-size gives "
                        "non-overlapping windows (default: ctx-size // 2)")
    add_compute_args(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON (default: off)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (default: off: a bar)")
    p.set_defaults(func=run)
    return p


class _Bar:
    """A progress bar on stderr: redrawn in place at most 5 times a second on a
    terminal; elsewhere (a log file) one line every 10 s and one at the end."""

    def __init__(self, stream=None, width=30):
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.tty = self.stream.isatty()
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done, total):
        now = time.perf_counter()
        if done < total and now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        fill = self.width * done // total
        line = (f"perplexity [{'#' * fill}{'.' * (self.width - fill)}] {done}/{total} windows, "
                f"{now - self.t0:.1f} s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done == total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(args) -> int:
    """The handler of ``bitnn-run perplexity``."""
    import json

    from bitnn._version import __version__
    from bitnn.cli import _open_model

    try:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"bitnn-run: {args.file}: {e}", file=sys.stderr)
        return 2
    model = _open_model(args, "lm", "is not a language model", precision=args.precision)
    if model is None:
        return 2
    with model:
        digest = _sha256(model.path) if args.json else None
        try:
            r = model.perplexity(text, ctx_size=args.ctx_size, stride=args.stride,
                                 progress=None if args.no_progress else _Bar())
        except (ValueError, TypeError) as e:
            print(f"bitnn-run: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\nbitnn-run: interrupted", file=sys.stderr)
            return 130
    if args.json:
        print(json.dumps({"model": args.model, "model_sha256": digest, "file": args.file,
                          "precision": args.precision, "bitnn": __version__,
                          **dataclasses.asdict(r)}, indent=2))
        return 0
    bpb = "n/a (no tokenizer)" if r.bits_per_byte is None else f"{r.bits_per_byte:.4f}"
    print(f"perplexity    {r.perplexity:.3f}\n"
          f"nll           {r.nll:.5f} nats/token\n"
          f"bits_per_byte {bpb}\n"
          f"tokens        {r.tokens}\n"
          f"bytes         {r.bytes}\n"
          f"ctx_size      {r.ctx_size}\n"
          f"stride        {r.stride}\n"
          f"windows       {r.windows}")
    return 0
