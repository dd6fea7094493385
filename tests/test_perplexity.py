"""Perplexity evaluation: the C core's per-position log-probabilities
(bitnn_lm_logprobs), the windows of LanguageModel.perplexity against a PyTorch
computation of the same windows, the definitions, bad input and the CLI."""

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import bitnn  # noqa: E402
from bitnn import _core  # noqa: E402
from bitnn import nn as bnn  # noqa: E402
from bitnn.perplexity import PerplexityResult, windows  # noqa: E402
from bitnn.tokenizer import _byte_alphabet  # noqa: E402

# |bitnn - torch| (float32 trunks in both) measured over 5 seeds of the shapes
# below: at most 3.3e-6 for one token's log-probability, 6e-8 for the mean nll
# of a text; the bounds leave 6x and 16x room.
LOGPROB_TOL = 2e-5
NLL_TOL = 1e-6

TEXT = ("When shall we three meet again\nIn thunder, lightning, or in rain?\n"
        "If music be the food of love, play on; the rest is silence. "
        "Friends, Romans, countrymen, lend me your ears: 😀 café.\n")


def small_bpe_spec():
    """A byte-level BPE: <|endoftext|> (special), the 256 bytes, a few merges."""
    alpha = _byte_alphabet()
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"),
              ("o", "u"), ("Ġ", "s"), ("a", "n"), ("Ġa", "n"), ("Ġan", "d"), ("Ċ", "I")]
    vocab = ["<|endoftext|>"] + alpha
    for a, b in merges:
        vocab.append(a + b)
    return {"type": "byte_bpe", "vocab": vocab, "merges": [list(m) for m in merges],
            "added_tokens": [{"id": 0, "special": True}]}


def make_lm(vocab, max_len, dim=32, heads=4, blocks=2, mlp=(24,), seed=0):
    torch.manual_seed(seed)
    m = bnn.BinaryLM(vocab, max_len, dim, heads, blocks, mlp)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # normal weights and biases: every bit pattern matters
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m.eval()


@pytest.fixture(scope="module")
def text_lm(tmp_path_factory):
    """(torch model, path) of a random model with a byte-level BPE tokenizer."""
    spec = small_bpe_spec()
    m = make_lm(len(spec["vocab"]), 16, seed=3)
    path = tmp_path_factory.mktemp("ppl") / "lm.bnb"
    bitnn.export(m, path, tokenizer=spec)
    return m, path


def torch_nll_sum(m, ids, ctx, stride):
    """Total nll of the windows, computed independently of bitnn.perplexity:
    as the Hugging Face sliding-window recipe with windows of ctx + 1 tokens
    (ctx fed, each predicting the next), scoring only tokens not scored before."""
    ids = list(ids)
    N = len(ids)
    total, count, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, N, stride):
            end = min(begin + ctx + 1, N)
            n_new = end - max(prev_end, begin + 1)  # the window's first token has no prediction
            x = torch.tensor([ids[begin:end - 1]])
            lp = torch.log_softmax(m(x)[0].double(), -1)
            tgt = torch.tensor(ids[begin + 1:end])
            per = -lp[torch.arange(len(tgt)), tgt]
            total += float(per[len(tgt) - n_new:].sum())
            count += n_new
            prev_end = end
            if end == N:
                break
    assert count == N - 1
    return total


# ------------------------------------------------------ per-position log-probs

SHAPES = [  # vocab, max_len, emb_dim, heads, blocks, mlp_units
    (37, 16, 32, 4, 2, (24, 16)),
    (101, 20, 64, 2, 0, ()),
    (5, 8, 8, 1, 3, (7,)),
    (257, 24, 96, 4, 1, (130,)),
    (20000, 64, 16, 2, 1, ()),  # the head runs in two chunks of rows (lm.c: 2^20 scores each)
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "v{}_l{}_d{}_b{}".format(*s[:3], s[4]))
def test_logprobs_match_torch(tmp_path, shape):
    V, L, D, H, NB, mlp = shape
    m = make_lm(V, L, D, H, NB, mlp, seed=V)
    bitnn.export(m, tmp_path / "lm.bnb")
    g = _core.LMGraph(_core.BnbFile(str(tmp_path / "lm.bnb")))
    ids = np.random.default_rng(V).integers(0, V, L + 1)
    with torch.no_grad():
        ref = torch.log_softmax(m(torch.from_numpy(ids[:-1])[None])[0].double(), -1)
        ref = ref[torch.arange(L), torch.from_numpy(ids[1:])].numpy()
    for first in (0, 1, L // 2, L - 1):
        got = g.new_state().logprobs(ids, first)
        assert got.dtype == np.float64 and got.shape == (L - first,)
        assert np.abs(got - ref[first:]).max() < LOGPROB_TOL


def test_logprobs_equal_the_forward_scores_of_each_prefix(tmp_path):
    """The batched head gives the same scores as the generation path's one-row head."""
    m = make_lm(37, 16, seed=1)
    bitnn.export(m, tmp_path / "lm.bnb")
    g = _core.LMGraph(_core.BnbFile(str(tmp_path / "lm.bnb")))
    ids = np.random.default_rng(0).integers(0, 37, 17)
    lp = g.new_state().logprobs(ids, 0)
    for r in range(16):
        s = g.new_state().forward(ids[:r + 1]).astype(np.float64)
        want = s[ids[r + 1]] - s.max() - math.log(np.exp(s - s.max()).sum())
        assert abs(lp[r] - want) < 1e-12, r


def test_logprobs_same_bits_for_every_kernel_and_thread_count(tmp_path):
    m = make_lm(129, 20, 80, 4, 2, (70,), seed=11)
    bitnn.export(m, tmp_path / "lm.bnb")
    g = _core.LMGraph(_core.BnbFile(str(tmp_path / "lm.bnb")))
    ids = np.random.default_rng(2).integers(0, 129, 21)
    outs = [g.new_state().logprobs(ids, 3, threads=t, kernel=k)
            for k in _core.kernels_supported() for t in (1, 2, 3)]
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


def test_logprobs_bad_input(tmp_path):
    m = make_lm(17, 8, 16, 2, 1, (8,))
    bitnn.export(m, tmp_path / "lm.bnb")
    g = _core.LMGraph(_core.BnbFile(str(tmp_path / "lm.bnb")))
    st_ = g.new_state()
    for bad in ([1], [3, 17], [-1, 2], [0.5, 1.5]):
        with pytest.raises(ValueError):
            st_.logprobs(np.array(bad))
    with pytest.raises(ValueError, match="first"):
        st_.logprobs(np.arange(4), 3)
    with pytest.raises(ValueError, match="fit"):
        st_.logprobs(np.arange(10) % 17)  # 9 rows > max_len 8
    assert st_.pos == 0
    st_.logprobs(np.arange(9) % 17)  # 8 rows fill the context; the last id is only a target
    assert st_.pos == 8


# -------------------------------------------------------------------- windows

@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 300), ctx=st.integers(1, 40), data=st.data())
def test_windows_score_every_token_but_the_first_once(n, ctx, data):
    stride = data.draw(st.integers(1, ctx))
    plan = windows(n, ctx, stride)
    scored = []
    for k, (start, end, first) in enumerate(plan):
        assert start == k * stride and 0 <= first < end - start <= ctx
        assert first == (0 if k == 0 else ctx - stride)
        rows = range(first, end - start)
        scored += [start + r + 1 for r in rows]  # row r predicts token start + r + 1
        if k:  # at least ctx - stride + 1 tokens of context for every scored token
            assert all(r + 1 >= ctx - stride + 1 for r in rows)
    assert scored == list(range(1, n))
    assert len(plan) == 1 + max(0, math.ceil((n - 1 - ctx) / stride))


# ------------------------------------------------------ perplexity vs PyTorch

# (ctx_size, stride, tokens of TEXT scored; None: all). Small strides score a
# prefix only: the PyTorch reference runs one forward pass per window.
@pytest.mark.parametrize("ctx,stride,n", [(16, None, None), (16, 16, None), (16, 5, None),
                                          (16, 1, 40), (7, 3, 60), (1, 1, 30)])
def test_perplexity_matches_torch_windows(text_lm, ctx, stride, n):
    m, path = text_lm
    with bitnn.load(path) as model:
        ids = model.tokenize(TEXT)
        assert len(ids) > 3 * 16
        if n is None:
            r = model.perplexity(TEXT, ctx_size=ctx, stride=stride)
        else:
            ids = ids[:n]
            r = model.perplexity(ids, ctx_size=ctx, stride=stride)
    s = max(1, ctx // 2) if stride is None else stride
    assert (r.ctx_size, r.stride, r.tokens) == (ctx, s, len(ids) - 1)
    assert r.windows == len(windows(len(ids), ctx, s))
    ref = torch_nll_sum(m, ids, ctx, s) / r.tokens
    assert abs(r.nll - ref) < NLL_TOL
    assert r.perplexity == pytest.approx(math.exp(r.nll), rel=1e-12)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=lambda s: f"v{s[0]}_b{s[4]}")
def test_perplexity_matches_torch_on_ids_without_tokenizer(tmp_path, shape):
    V, L, D, H, NB, mlp = shape
    m = make_lm(V, L, D, H, NB, mlp, seed=7)
    bitnn.export(m, tmp_path / "lm.bnb")
    ids = np.random.default_rng(5).integers(0, V, 5 * L + 3)
    with bitnn.load(tmp_path / "lm.bnb") as model:
        r = model.perplexity(ids, stride=L // 3)
    assert r.bytes is None and r.bits_per_byte is None
    assert abs(r.nll - torch_nll_sum(m, ids, L, L // 3) / r.tokens) < NLL_TOL


# ------------------------------------------------------------- definitions

def test_bytes_and_bits_per_byte(text_lm):
    _, path = text_lm
    with bitnn.load(path) as model:
        ids = model.tokenize(TEXT)
        r = model.perplexity(TEXT)
        first = len(model.tokenizer.token_bytes(ids[0]))
        assert r.bytes == len(TEXT.encode("utf-8")) - first
        assert r.bits_per_byte == pytest.approx(r.nll * r.tokens / math.log(2) / r.bytes,
                                                rel=1e-12)
        # ids give the same figures as their text
        for form in (ids, tuple(ids), np.array(ids, dtype=np.uint16)):
            assert model.perplexity(form) == r
        # a special token counts as its own text (13 bytes for <|endoftext|>)
        with_eot = model.perplexity([0] + ids + [0])
        assert with_eot.bytes == r.bytes + first + len("<|endoftext|>")
    assert isinstance(r, PerplexityResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.nll = 0.0


def test_progress_is_called_after_each_window(text_lm):
    _, path = text_lm
    calls = []
    with bitnn.load(path) as model:
        r = model.perplexity(TEXT, ctx_size=8, stride=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(k, r.windows) for k in range(1, r.windows + 1)]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_thread_counts_give_the_same_figures(text_lm, precision):
    _, path = text_lm
    figures = []
    for threads in (1, 2):
        with bitnn.load(path, threads=threads, precision=precision) as model:
            figures.append(model.perplexity(TEXT, ctx_size=12, stride=5))
    assert figures[0] == figures[1]


def test_int8_scores_with_the_int8_network(text_lm):
    """precision="int8" reaches the scored windows: the figures are those of the int8
    network's own next-token probabilities, not fp32's."""
    _, path = text_lm
    with bitnn.load(path, precision="int8") as q, bitnn.load(path) as f:
        ids = q.tokenize(TEXT)[:16]
        got = q.perplexity(ids, ctx_size=15)
        assert got != f.perplexity(ids, ctx_size=15)
        probs = q.predict([ids[:i] for i in range(1, 16)])
        want = -np.mean(np.log(probs[np.arange(15), ids[1:]].astype(np.float64)))
        assert abs(got.nll - want) < 1e-6


# -------------------------------------------------------------- bad input

def test_bad_input(text_lm):
    _, path = text_lm
    model = bitnn.load(path)
    one_token = "a"
    assert len(model.tokenize(one_token)) == 1
    for short in ("", one_token, [], [5]):
        with pytest.raises(ValueError, match="at least 2 tokens"):
            model.perplexity(short)
    for ctx in (0, -1, 17):
        with pytest.raises(ValueError, match="ctx_size must be from 1 to 16"):
            model.perplexity(TEXT, ctx_size=ctx)
    for stride in (0, -3, 9):
        with pytest.raises(ValueError, match="stride must be from 1 to 8"):
            model.perplexity(TEXT, ctx_size=8, stride=stride)
    for bad in (8.0, "8", True):
        with pytest.raises(TypeError, match="ctx_size must be an int"):
            model.perplexity(TEXT, ctx_size=bad)
        with pytest.raises(TypeError, match="stride must be an int"):
            model.perplexity(TEXT, stride=bad)
    for bad in (None, 3, 2.5, b"bytes", {"a": 1}):
        with pytest.raises(TypeError, match="str or a sequence of token ids"):
            model.perplexity(bad)
    for bad in ([1.0, 2.0], np.array([True, False]), ["a", "b"], [1, None]):
        with pytest.raises(TypeError, match="integers"):
            model.perplexity(bad)
    with pytest.raises(ValueError, match="out of the vocabulary"):
        model.perplexity([1, 2, model.vocab_size])
    with pytest.raises(ValueError, match="one sequence"):
        model.perplexity(np.ones((2, 5), dtype=np.int64))
    model.close()
    with pytest.raises(ValueError, match="closed"):
        model.perplexity(TEXT)


def test_text_needs_a_tokenizer(tmp_path):
    bitnn.export(make_lm(20, 8, 16, 2, 1, ()), tmp_path / "lm.bnb")
    with bitnn.load(tmp_path / "lm.bnb") as model:
        with pytest.raises(ValueError, match="without a tokenizer"):
            model.perplexity("some text")


# ---------------------------------------------------------------------- CLI

def run_cli(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "bitnn.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_figures_match_the_method(text_lm, tmp_path):
    _, path = text_lm
    f = tmp_path / "text.txt"
    f.write_text(TEXT, encoding="utf-8")
    with bitnn.load(path) as model:
        want = model.perplexity(TEXT, ctx_size=12, stride=5)
    r = run_cli("perplexity", "-m", path, "-f", f, "-c", 12, "--stride", 5, "--json", "-t", 1)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for k, v in dataclasses.asdict(want).items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    assert f"{want.windows}/{want.windows} windows" in r.stderr  # the progress bar
    with bitnn.load(path, precision="int8") as model:
        want8 = model.perplexity(TEXT, ctx_size=12, stride=5)
    r = run_cli("perplexity", "-m", path, "-f", f, "-c", 12, "--stride", 5, "--json",
                "--precision", "int8")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nll"] == want8.nll and want8.nll != want.nll
    r = run_cli("perplexity", "-m", path, "-f", f, "-c", 12, "--stride", 5, "--no-progress")
    assert r.returncode == 0 and r.stderr == ""
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert float(lines["perplexity"]) == pytest.approx(want.perplexity, rel=1e-3)
    assert float(lines["bits_per_byte"]) == pytest.approx(want.bits_per_byte, rel=1e-3)
    assert int(lines["tokens"]) == want.tokens and int(lines["bytes"]) == want.bytes


def test_cli_errors(text_lm, tmp_path):
    _, path = text_lm
    f = tmp_path / "text.txt"
    f.write_text(TEXT, encoding="utf-8")
    short = tmp_path / "short.txt"
    short.write_text("a", encoding="utf-8")
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes(b"ab\xff\xfe")
    cases = [
        (["-m", path, "-f", tmp_path / "missing.txt"], "missing.txt"),
        (["-m", path, "-f", bad_utf8], "bad.txt"),
        (["-m", path, "-f", short], "at least 2 tokens"),
        (["-m", path, "-f", f, "-c", 17], "ctx_size must be from 1 to 16"),
        (["-m", path, "-f", f, "-c", 8, "--stride", 9], "stride must be from 1 to 8"),
        (["-m", tmp_path / "nope.bnb", "-f", f], "no model file"),
        (["-m", "fashion", "-f", f], "is not a language model"),
        (["-m", path, "-f", f, "--precision", "fp16"], "argument --precision: invalid choice"),
        (["-m", path, "-f", f, "-t", 0], "-t/--threads: '0': must be from 1 to 1024"),
    ]
    for args, msg in cases:
        r = run_cli("perplexity", *args, "--no-progress")
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == ""
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    r = run_cli("perplexity", "-m", path)  # -f is required
    assert r.returncode == 2 and "-f/--file" in r.stderr
