"""The language decoder: torch layers (bitnn.nn BinaryLM & co), export, and
parity of the exported file with the C runtime (csrc/graph/lm.c)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import bitnn  # noqa: E402
from bitnn import _core  # noqa: E402
from bitnn import nn as bnn  # noqa: E402
from bitnn.ops import unpack_bits  # noqa: E402
from conftest import make_lm, randomize, softmax64  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def open_graph(path):
    f = _core.BnbFile(str(path))
    return f, _core.LMGraph(f)


# ------------------------------------------------------------------ shapes

@pytest.mark.parametrize("binary", [True, False])
def test_forward_shape_and_config(binary):
    m = bnn.BinaryLM(50, 12, 16, 2, 2, (8,), binary=binary)
    out = m(torch.randint(0, 50, (3, 7)))
    assert out.shape == (3, 7, 50)
    assert m.config == {"vocab_size": 50, "max_len": 12, "emb_dim": 16, "num_heads": 2,
                        "num_blocks": 2, "mlp_units": [8], "eps": 1e-5, "binary": binary,
                        "ff_dim": 32}
    m2 = bnn.BinaryLM(**m.config)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2(torch.tensor([[1, 2, 3]])), m(torch.tensor([[1, 2, 3]])))


def test_float_lm_is_the_fp32_twin():
    m = bnn.FloatLM(20, 8, 8, 2, 1, ())
    assert m.binary is False and m.config["binary"] is False
    names = {n for n, _ in m.named_parameters()}
    assert "blocks.0.norm1.norm_weight" in names and "embed_norm.norm_bias" in names
    assert "output.norm_weight" in names
    b = bnn.BinaryLM(20, 8, 8, 2, 1, ())
    assert not any("norm_" in n for n, _ in b.named_parameters())


def test_attribute_names_for_export():
    m = bnn.BinaryLM(30, 10, 16, 4, 2, (12, 6))
    assert m.embedding.token.weight.shape == (16, 30)
    assert m.embedding.position.weight.shape == (16, 10)
    for blk in m.blocks:
        for nm in ("q", "k", "v", "out"):
            assert getattr(blk.attn, nm).weight.shape == (16, 16)
        assert blk.ff1.weight.shape == (32, 16) and blk.ff1.activation == "gelu"
        assert blk.ff2.weight.shape == (16, 32) and blk.ff2.activation == "linear"
    assert [h.weight.shape for h in m.head] == [(12, 16), (6, 12)]
    assert all(h.activation == "gelu" for h in m.head)
    assert m.output.weight.shape == (30, 6) and m.output.activation == "linear"


def test_validation_errors():
    with pytest.raises(ValueError, match="divisible"):
        bnn.BinaryLM(10, 8, 10, 3, 1, ())
    with pytest.raises(ValueError, match="divisible"):
        bnn.BinaryMultiHeadAttention(10, 4)
    with pytest.raises(ValueError):
        bnn.BinaryLM(10, 8, 8, 2, -1, ())
    with pytest.raises(ValueError):
        bnn.BinaryLM(10, 8, 8, 2, 1, (0,))
    with pytest.raises(ValueError):
        bnn.BinaryLM(0, 8, 8, 2, 1, ())
    m = bnn.BinaryLM(10, 8, 8, 2, 1, (4,))
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        m(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="vocabulary"):
        m(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="batch, time"):
        m(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="integers"):
        m(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError):
        m(torch.zeros(1, 0, dtype=torch.long))
    assert m(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 10)  # T == max_len is fine


# ------------------------------------------------------------------- maths

def test_embedding_is_a_column_gather_of_the_binary_linear():
    emb = randomize(bnn.BinaryEmbedding(11, 6, 8))
    ids = torch.tensor([[3, 0, 10, 3, 7]])
    got = emb(ids)
    tok = emb.token.preact(F.one_hot(ids, 11).float())
    pos = emb.position.preact(F.one_hot(torch.arange(5), 6).float())
    assert torch.allclose(got, tok + pos, atol=1e-6)
    # by hand: Normalize(Wb[:, t] + bb)
    wb, bb = emb.token.binary_weight(), emb.token.binary_bias()
    z = wb[:, 10] + bb
    assert torch.allclose(got[0, 2] - pos[2], (z - z.mean()) / torch.sqrt(z.var(unbiased=False)
                                                                          + 1e-5), atol=1e-6)


def test_embedding_gradients_reach_the_latent_weights():
    emb = bnn.BinaryEmbedding(11, 6, 8)
    emb(torch.tensor([[1, 2, 3]])).square().sum().backward()
    assert emb.token.weight.grad is not None and emb.token.weight.grad[:, :4].abs().sum() > 0
    assert emb.token.weight.grad[:, 5:].abs().sum() == 0  # only gathered columns
    assert emb.position.weight.grad[:, :3].abs().sum() > 0


def _norm(z, eps=1e-5):
    var = z.var(-1, unbiased=False, keepdim=True)
    return (z - z.mean(-1, keepdim=True)) / torch.sqrt(var + eps)


def test_attention_matches_the_explicit_math():
    att = randomize(bnn.BinaryMultiHeadAttention(12, 3))
    x = torch.randn(2, 5, 12)
    got = att(x)
    q, k, v = att.q(x), att.k(x), att.v(x)
    H, hd = 3, 4
    outs = []
    for h in range(H):
        sl = slice(h * hd, (h + 1) * hd)
        s = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(hd)
        s = s.masked_fill(torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), float("-inf"))
        outs.append(torch.softmax(s, -1) @ v[..., sl])
    want = att.out(torch.cat(outs, -1))
    assert torch.allclose(got, want, atol=1e-5)
    # every projection is normalized per token over the full emb_dim
    assert torch.allclose(q.mean(-1), torch.zeros(2, 5), atol=1e-5)


def test_block_and_lm_match_the_formulas():
    m = make_lm(vocab=23, max_len=9, dim=16, heads=2, blocks=2, mlp=(10, 7))
    ids = torch.randint(0, 23, (2, 9))
    x = _norm(m.embedding(ids))
    for blk in m.blocks:
        h = _norm(x + blk.attn(x))
        x = _norm(h + blk.ff2(F.gelu(_norm(F.linear(h, blk.ff1.binary_weight(),
                                                     blk.ff1.binary_bias())))))
    for layer in m.head:
        x = F.gelu(_norm(F.linear(x, layer.binary_weight(), layer.binary_bias())))
    want = _norm(F.linear(x, m.output.binary_weight(), m.output.binary_bias()))
    assert torch.allclose(m(ids), want, atol=1e-4)


@pytest.mark.parametrize("binary", [True, False])
def test_train_equals_eval(binary):
    m = bnn.BinaryLM(40, 10, 16, 4, 2, (12,), binary=binary)
    ids = torch.randint(0, 40, (3, 10))
    m.train()
    a = m(ids)
    m.eval()
    assert torch.equal(a, m(ids))


@pytest.mark.parametrize("binary", [True, False])
def test_causal(binary):
    m = make_lm(binary=binary) if binary else randomize(bnn.FloatLM(37, 16, 32, 4, 2, (24, 16)))
    ids = torch.randint(0, 37, (2, 16))
    base = m(ids)
    for k in (0, 5, 15):
        changed = ids.clone()
        changed[:, k:] = (changed[:, k:] + 1 + torch.arange(16 - k)) % 37
        out = m(changed)
        assert torch.allclose(out[:, :k], base[:, :k], atol=1e-6)
        assert not torch.allclose(out[:, k:], base[:, k:])


def test_every_parameter_gets_a_gradient():
    m = bnn.BinaryLM(30, 8, 16, 2, 2, (12, 8))
    ids = torch.randint(0, 30, (4, 8))
    F.cross_entropy(m(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        if "position" not in n:  # positions 7.. are never used
            assert p.grad.abs().sum() > 0, n


# ------------------------------------------------------------------ export

def test_export_layout(tmp_path):
    m = make_lm(vocab=37, max_len=16, dim=32, heads=4, blocks=2, mlp=(24, 16))
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path, name="tiny", training={"note": "test"})
    f = _core.BnbFile(str(path))
    meta = f.meta
    assert meta["model"] == {"kind": "lm", "name": "tiny"}
    assert meta["eps"] == 1e-5
    assert meta["lm"] == {"vocab_size": 37, "max_len": 16, "emb_dim": 32, "num_heads": 4,
                          "num_blocks": 2, "ff_dim": 64, "mlp_units": [24, 16]}
    assert meta["training"] == {"note": "test"}
    assert "tokenizer" not in meta
    shapes = {k: v["shape"] for k, v in meta["tensors"].items()}
    want = {"embed.token.weight": [37, 32], "embed.token.bias": [32],
            "embed.position.weight": [16, 32], "embed.position.bias": [32],
            "head.0.weight": [24, 32], "head.0.bias": [24], "head.1.weight": [16, 24],
            "head.1.bias": [16], "output.weight": [37, 16], "output.bias": [37]}
    for i in range(2):
        for nm in ("q", "k", "v", "out"):
            want[f"blocks.{i}.attn.{nm}.weight"] = [32, 32]
            want[f"blocks.{i}.attn.{nm}.bias"] = [32]
        want.update({f"blocks.{i}.ff1.weight": [64, 32], f"blocks.{i}.ff1.bias": [64],
                     f"blocks.{i}.ff2.weight": [32, 64], f"blocks.{i}.ff2.bias": [32]})
    assert shapes == want
    assert all(v["dtype"] == "bits" for v in meta["tensors"].values())
    # row t of the token table is column t of the quantized token kernel; every
    # other tensor is the quantized (out, in) kernel / bias as is
    def bits(name, cols):
        return unpack_bits(np.array(f.tensor(name)), cols)

    assert np.array_equal(bits("embed.token.weight", 32),
                          m.embedding.token.binary_weight().numpy().T)
    assert np.array_equal(bits("embed.position.weight", 32),
                          m.embedding.position.binary_weight().numpy().T)
    assert np.array_equal(bits("embed.token.bias", 32)[0], m.embedding.token.binary_bias().numpy())
    assert np.array_equal(bits("blocks.1.attn.v.weight", 32),
                          m.blocks[1].attn.v.binary_weight().numpy())
    assert np.array_equal(bits("blocks.0.ff2.weight", 64), m.blocks[0].ff2.binary_weight().numpy())
    assert np.array_equal(bits("output.weight", 16), m.output.binary_weight().numpy())
    assert np.array_equal(bits("output.bias", 37)[0], m.output.binary_bias().numpy())
    f.close()


def test_export_token_table_multiword_rows(tmp_path):
    m = make_lm(vocab=5, max_len=3, dim=70, heads=2, blocks=0, mlp=())
    path = tmp_path / "t.bnb"
    bitnn.export(m, path)
    f = _core.BnbFile(str(path))
    words = np.array(f.tensor("embed.token.weight"))
    assert words.shape == (5, 2)
    assert np.array_equal(unpack_bits(words, 70), m.embedding.token.binary_weight().numpy().T)
    f.close()


def test_export_rejects_fp32_and_classifier_keywords(tmp_path):
    with pytest.raises(ValueError, match="binary"):
        bitnn.export(bnn.FloatLM(10, 4, 8, 2, 1, ()), tmp_path / "x.bnb")
    with pytest.raises(ValueError, match="classifiers"):
        bitnn.export(bnn.BinaryLM(10, 4, 8, 2, 1, ()), tmp_path / "x.bnb", input_shape=(1, 2, 2))
    assert not (tmp_path / "x.bnb").exists()


def _hf_bpe(vocab_size=300):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n" * 20
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def _bitnn_tokenizer():
    try:
        from bitnn import tokenizer
    except ImportError:
        pytest.skip("bitnn.tokenizer is not there yet")
    return tokenizer


def test_export_tokenizer_spec_forms(tmp_path):
    btok = _bitnn_tokenizer()
    hf = _hf_bpe()
    spec = btok.spec_from_hf(hf)
    V = hf.get_vocab_size()
    m = bnn.BinaryLM(V, 4, 8, 2, 1, ())
    # a spec dict, a bitnn Tokenizer and a HF tokenizer all store the same spec
    for form in (spec, btok.Tokenizer(spec), hf):
        bitnn.export(m, tmp_path / "x.bnb", tokenizer=form)
        f = _core.BnbFile(str(tmp_path / "x.bnb"))
        assert f.meta["tokenizer"] == spec
        f.close()
    with pytest.raises(ValueError):
        bitnn.export(m, tmp_path / "y.bnb", tokenizer={"type": "nonsense"})
    with pytest.raises(ValueError, match="tokenizer has"):
        bitnn.export(bnn.BinaryLM(V - 1, 4, 8, 2, 1, ()), tmp_path / "y.bnb", tokenizer=hf)
    assert not (tmp_path / "y.bnb").exists()


# ----------------------------------------------------------------- parity

SHAPES = [  # vocab, max_len, emb_dim, heads, blocks, mlp_units
    (37, 16, 32, 4, 2, (24, 16)),
    (101, 20, 64, 2, 0, ()),
    (5, 8, 8, 1, 3, (7,)),
    (2, 6, 12, 3, 1, (5, 3, 9)),
    (257, 24, 96, 4, 1, (130,)),
    (13, 70, 16, 2, 2, ()),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "v{}_l{}_d{}_h{}_b{}_m{}".format(*s))
def test_runtime_parity(tmp_path, shape):
    V, L, D, H, NB, mlp = shape
    m = make_lm(V, L, D, H, NB, mlp, seed=V + D)
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path)
    f, g = open_graph(path)
    assert g.config == {"vocab_size": V, "max_len": L, "emb_dim": D, "num_heads": H,
                        "num_blocks": NB, "ff_dim": 2 * D}
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for T in sorted({1, 2, L // 2, L}):
            ids = torch.randint(0, V, (1, T), generator=gen)
            ref = m(ids)[0, -1].numpy()
            got = g.new_state().forward(ids[0].numpy())
            assert got.shape == (V,) and got.dtype == np.float32
            # measured: at most 1.7e-7 over SHAPES
            assert np.abs(softmax64(got) - softmax64(ref)).max() < 1e-6
            assert int(np.argmax(got)) == int(np.argmax(ref))
            # measured: at most 2.8e-6 (raw scores)
            assert np.abs(got - ref).max() < 1.5e-5


@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: f"v{s[0]}_b{s[4]}")
def test_batch_vs_token_by_token_vs_fresh_prefix(tmp_path, shape):
    V, L, D, H, NB, mlp = shape
    m = make_lm(V, L, D, H, NB, mlp, seed=3)
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path)
    f, g = open_graph(path)
    ids = np.random.default_rng(0).integers(0, V, L)
    batch = g.new_state().forward(ids)
    st = g.new_state()
    for t in range(L):
        step = st.forward(ids[t:t + 1])
        fresh = g.new_state().forward(ids[:t + 1])
        assert np.array_equal(step, fresh), t
    assert st.pos == L
    assert np.array_equal(step, batch)
    # a prompt split into chunks through the KV cache
    st = g.new_state()
    st.forward(ids[:3], scores=False)
    assert st.pos == 3
    chunked = st.forward(ids[3:])
    assert np.array_equal(chunked, batch)
    # reset starts over
    st.reset()
    assert st.pos == 0
    assert np.array_equal(st.forward(ids), batch)


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2], (61, 64, 32, 2, 2, (20,))],
                         ids=lambda s: f"v{s[0]}_b{s[4]}")
def test_greedy_generation_matches_torch(tmp_path, shape):
    V, L, D, H, NB, mlp = shape
    L = max(L, 56)
    m = make_lm(V, L, D, H, NB, mlp, seed=5)
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path)
    f, g = open_graph(path)
    prompt = [1, 2, 3, 4, 0][: min(5, V)]
    prompt = [p % V for p in prompt]
    n_new = 50
    # runtime: prompt in one pass, then one token at a time through the KV cache
    st = g.new_state()
    scores = st.forward(np.array(prompt))
    rt = list(prompt)
    for _ in range(n_new):
        nxt = int(np.argmax(scores))
        rt.append(nxt)
        if len(rt) - len(prompt) == n_new:
            break
        scores = st.forward(np.array([nxt]))
    # torch: the full forward recomputed each step
    ref = list(prompt)
    margins = []
    with torch.no_grad():
        for _ in range(n_new):
            s = m(torch.tensor([ref]))[0, -1]
            top = torch.topk(s, 2).values if V > 1 else s
            margins.append(float(top[0] - top[1]))
            ref.append(int(s.argmax()))
    assert min(margins) > 1e-4, "near-tie in the reference: pick another seed"
    assert rt == ref


@pytest.mark.parametrize("threads", [1, 2])
def test_parity_across_kernels_and_threads(tmp_path, threads):
    m = make_lm(129, 20, 80, 4, 2, (70,), seed=11)
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path)
    f, g = open_graph(path)
    ids = np.random.default_rng(2).integers(0, 129, 20)
    with torch.no_grad():
        ref = m(torch.from_numpy(ids)[None])[0, -1].numpy()
    outs = []
    for kernel in _core.kernels_supported():
        got = g.new_state().forward(ids, threads=threads, kernel=kernel)
        # measured: 2.6e-8
        assert np.abs(softmax64(got) - softmax64(ref)).max() < 2e-7, kernel
        outs.append(got)
    outs.append(g.new_state().forward(ids, threads=3))  # and a third thread count
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


def test_bad_ids_and_context_overflow(tmp_path):
    m = make_lm(17, 8, 16, 2, 1, (8,))
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path)
    f, g = open_graph(path)
    st = g.new_state()
    for bad in ([-1], [17], [3, 100], [0, -5, 2]):
        with pytest.raises(ValueError):
            st.forward(np.array(bad))
        assert st.pos == 0
    with pytest.raises(ValueError):
        st.forward(np.zeros(9, dtype=np.int64))  # more than max_len
    st.forward(np.arange(6))
    with pytest.raises(ValueError):
        st.forward(np.arange(3))  # 6 + 3 > 8
    assert st.pos == 6
    st.forward(np.arange(2))
    with pytest.raises(ValueError):
        st.forward(np.array([1]))
    small = g.new_state(3)
    small.forward(np.arange(3))
    with pytest.raises(ValueError):
        small.forward(np.array([0]))
    for ctx in (0, 9):
        with pytest.raises(ValueError):
            g.new_state(ctx)
    with pytest.raises(ValueError):
        st.forward(np.array([], dtype=np.int64))
    with pytest.raises(ValueError):
        g.new_state().forward(np.array([0.5]))


# ---------------------------------------------------- high-level load/predict

def test_load_predict_matches_torch(tmp_path):
    m = make_lm(41, 12, 24, 3, 2, (16,), seed=7)
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path)
    model = bitnn.load(path)
    if not hasattr(model, "predict"):
        pytest.skip("bitnn.load does not return a language model with predict() yet")
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 41, 12), rng.integers(0, 41, 5)
    probs = model.predict([list(a), list(b)])
    assert probs.shape == (2, 41)
    with torch.no_grad():
        for row, seq in zip(probs, (a, b)):
            ref = torch.softmax(m(torch.from_numpy(seq)[None])[0, -1].double(), -1).numpy()
            # measured: 2.5e-8
            assert np.abs(row - ref).max() < 2e-7
            assert abs(row.sum() - 1) < 1e-5
    one = model.predict(list(b))
    assert one.shape == (1, 41) and np.array_equal(one[0], probs[1])  # alone or in a batch
    with pytest.raises(ValueError):
        model.predict([0, 41])
    with pytest.raises(ValueError):
        model.predict(list(range(13)))
    model.close()


def test_export_with_hf_tokenizer_roundtrip(tmp_path):
    _bitnn_tokenizer()
    tok = _hf_bpe()
    V = tok.get_vocab_size()
    m = make_lm(V, 16, 16, 2, 1, (8,))
    path = tmp_path / "lm.bnb"
    bitnn.export(m, path, tokenizer=tok)
    model = bitnn.load(path)
    s = "Whether 'tis nobler in the question"
    ids = tok.encode(s).ids
    assert model.tokenize(s) == ids
    assert model.detokenize(ids) == s
    with torch.no_grad():
        ref = torch.softmax(m(torch.tensor([ids]))[0, -1].double(), -1).numpy()
    # measured: 4.0e-9
    assert np.abs(model.predict(ids)[0] - ref).max() < 3e-8
    model.close()
