"""Shared fixtures and helpers of the test suite.

Random models (every bit pattern matters, so weights and biases are drawn
from a normal distribution, not Glorot + zero bias), a float64 softmax, and a
helper that rewrites a valid .bnb file with edited metadata (to build files
that break one loader rule at a time). torch and tokenizers are imported
only by the helpers that need them, so ``import bitnn`` tests run without.

Test files import the helpers with ``from conftest import ...`` (pytest puts
tests/ on sys.path).
"""
from __future__ import annotations

import numpy as np
import pytest


def softmax64(x):
    """Softmax over the last axis in float64."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def randomize(model, seed=0):
    """Normal weights and biases from a seeded generator; returns the model."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def random_cnn(seed, **kw):
    """A BinaryCNN(**kw) in eval mode with normal weights and biases."""
    import torch

    from bitnn.nn import BinaryCNN

    torch.manual_seed(seed)
    m = BinaryCNN(**kw).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def make_lm(vocab=37, max_len=16, dim=32, heads=4, blocks=2, mlp=(24, 16), seed=0, **kw):
    """A BinaryLM in eval mode with normal weights and biases."""
    import torch

    from bitnn import nn as bnn

    torch.manual_seed(seed)
    return randomize(bnn.BinaryLM(vocab, max_len, dim, heads, blocks, mlp, **kw), seed).eval()


def rewrite_bnb(src, dst, edit):
    """Write dst with src's tensors and ``edit(meta)``'s metadata (edit works in place).

    The tensors keep their bits; only the JSON header changes, so the file is
    well formed and only the rule the edit breaks can reject it."""
    from bitnn import _core
    from bitnn.format import Bits, read_header, write_bnb

    meta = read_header(src)
    tensors = {}
    with _core.BnbFile(str(src)) as f:
        for name in f.tensor_names:
            info = meta["tensors"][name]
            tensors[name] = Bits(np.array(f.tensor(name)), info["shape"])
    del meta["tensors"]
    edit(meta)
    write_bnb(dst, meta, tensors)
    return dst


TEXT = ("ROMEO: But soft, what light through yonder window breaks?\n"
        "JULIET: O Romeo, Romeo, wherefore art thou Romeo? Ça va, naïve café.\n") * 40


@pytest.fixture(scope="session")
def lm_path(tmp_path_factory):
    """(torch BinaryLM, path of its .bnb with a byte-level BPE tokenizer, the HF tokenizer)."""
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    import bitnn
    from bitnn.nn import BinaryLM

    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator([TEXT], vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<|endoftext|>"])
    vocab = tok.get_vocab_size()
    torch.manual_seed(0)
    m = BinaryLM(vocab, max_len=24, emb_dim=16, num_heads=2, num_blocks=2, mlp_units=(24,)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    path = tmp_path_factory.mktemp("lm") / "tiny.bnb"
    bitnn.export(m, path, tokenizer=tok._tokenizer, name="tiny")
    return m, path, tok
