#!/usr/bin/env python3
"""Speed, size and memory of the BLM language decoder (docs/maths.md):
bitnn's C runtime in both numeric modes against PyTorch fp32 eager and
PyTorch dynamic int8 implementations of the same model with a KV cache, side
by side in one run.

Models: the paper's ``small`` (max_len 256, 12 blocks, emb_dim 768, 16 heads,
MLP head 4096-2048, vocab 30522: 154.4 M parameters) and ``large`` (16 blocks,
emb_dim 1024, MLP head 8192-4096: 332.8 M) configs as ``bitnn.nn.BinaryLM``
with seeded random weights (Glorot uniform, as built) and normal random
biases, so that every tensor's bits are about half ones. No training.

Engines (all fed the same ids):

- bitnn fp32 / bitnn int8: the model exported with ``bitnn.export`` (no
  tokenizer) and run through the low-level API: ``LMGraph(BnbFile(path))``
  with ``graph.precision = "fp32"`` or ``"int8"`` (one graph each, over one
  open file), ``state = graph.new_state(max_len)``,
  ``state.forward(ids, threads=t)``. ``bitnn.load(path).generate`` is checked
  once (fp32, greedy, against the torch twin) but not timed.
- torch fp32: :func:`torch_twin`, an eager ``nn.Module`` whose linear layers
  are ``nn.Linear`` modules holding the BinaryLM's quantized 0/1 weights and
  biases as float32 (computed once), doing the same maths: Normalize as
  ``F.layer_norm`` without affine, causal ``F.scaled_dot_product_attention``
  over a preallocated KV cache, exact gelu, and the MLP head / output layer
  for the last position only. ``torch.set_num_threads(t)``,
  ``torch.inference_mode()``.
- torch int8: the same module after
  ``torch.ao.quantization.quantize_dynamic(twin, {nn.Linear}, dtype=torch.qint8)``
  (int8 weights, activations quantized on the fly per call; the embedding
  lookups, attention and Normalize stay fp32). torch.ao.quantization is
  deprecated in recent PyTorch releases; its warnings are silenced here.

Measured for each config and thread count:

- decode at context C (16 and 200): prefill C tokens (not timed), then time
  the next ``steps`` single-token forward calls (KV cache holding C .. C+steps-1
  positions); tokens/s = steps / time;
- prefill: one batched forward call of a 128-token prompt into an empty cache.

Each cell is warmed up once, then timed in ``rounds`` rounds, the four
engines' order rotating from round to round (so all see the same background
load); the tables give medians over rounds and the ratios of
``RATIOS`` (bitnn int8 / torch fp32, bitnn int8 / torch int8, bitnn fp32 /
torch fp32, bitnn fp32 / torch int8: tokens/s over tokens/s). Besides the
wall clock, the process CPU time (``time.process_time``) of the same calls is
recorded: with one thread it is what a call costs when it has a core of its
own, the fairer figure on a busy machine. The issue-7 targets
(``SPEED_TARGETS``, ``THREAD_TARGET``) are printed with met / NOT met.

Also: next-token score parity on a prefill and on cached single-token steps
(fp32 engines vs ``BinaryLM.forward`` to float rounding; the int8 engines'
max |diff| and argmax agreement with it); the .bnb file size next to the
fp32 state_dict (``torch.save``) size; and, for each precision, the peak RSS
(VmHWM) of a separate process that imports only bitnn (no torch), loads the
model and generates 64 tokens.

    python3 tools/bench_lm.py --json bench_lm.json    # small and large
    python3 tools/bench_lm.py --configs small
    python3 tools/bench_lm.py --quick                 # small shrunk to 2 blocks, ~1 min
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# The engines alternate in one process: set before torch is imported.
from common import set_engine_env  # noqa: E402

set_engine_env()

import numpy as np  # noqa: E402

from common import (  # noqa: E402
    begin_report,
    close_report,
    load_now,
    machine_info,
    md_table,
    ratio_key,
    stop_report_clock,
    time_rounds,
    verdict,
)

PRECISIONS = ("fp32", "int8")
ENGINES = ("bitnn_fp32", "bitnn_int8", "torch_fp32", "torch_int8")
# Ratios reported, each the first engine's tokens/s over the second's.
RATIOS = (("bitnn_int8", "torch_fp32"), ("bitnn_int8", "torch_int8"),
          ("bitnn_fp32", "torch_fp32"), ("bitnn_fp32", "torch_int8"))

# docs/maths.md, The language decoder: the paper's two BLM configs.
CONFIGS = {
    "small": {"vocab_size": 30522, "max_len": 256, "emb_dim": 768, "num_heads": 16,
              "num_blocks": 12, "mlp_units": [4096, 2048]},
    "large": {"vocab_size": 30522, "max_len": 256, "emb_dim": 1024, "num_heads": 16,
              "num_blocks": 16, "mlp_units": [8192, 4096]},
}
PAPER_PARAMS = {"small": 154.4e6, "large": 332.8e6}

# Per config: (decode steps timed per round, rounds); --quick and the flags override.
SCHEDULE = {"small": (16, 7), "large": (8, 5)}
MB = 1e6


class UsageError(ValueError):
    """A bad command-line choice (reported as one line, exit status 2)."""


# ----------------------------------------------------------------- models

def build_binary_lm(cfg: dict, seed: int):
    """A BinaryLM of the config with seeded random weights and biases."""
    import torch

    from bitnn import nn as bnn

    torch.manual_seed(seed)
    model = bnn.BinaryLM(cfg["vocab_size"], cfg["max_len"], cfg["emb_dim"], cfg["num_heads"],
                         cfg["num_blocks"], cfg["mlp_units"])
    # Weights are Glorot uniform (symmetric about 0: ~half ones); biases start
    # at zero, which quantizes to all zeros, so draw them too.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, bnn.BinaryLinear):
                m.bias.normal_()
    return model.eval()


def _torch_lm_class():
    """TorchLM, defined on first use so that the peak-RSS child never imports torch."""
    global _TorchLM
    if _TorchLM is not None:
        return _TorchLM
    import torch
    from torch import nn

    F = nn.functional

    def linear_of(m):
        """An nn.Linear holding a BinaryLinear's 0/1 weights and bias as float32."""
        lin = nn.Linear(m.in_features, m.out_features, device="meta")  # no random init
        lin.weight = nn.Parameter(m.binary_weight().float().contiguous(), requires_grad=False)
        lin.bias = nn.Parameter(m.binary_bias().float().contiguous(), requires_grad=False)
        return lin

    class Cache:
        """Keys and values (blocks, heads, ctx, head_dim) and the next position."""

        def __init__(self, lm, ctx: int):
            shape = (lm.num_blocks, lm.heads, ctx, lm.head_dim)
            self.k = torch.zeros(shape)
            self.v = torch.zeros(shape)
            self.ctx, self.pos = ctx, 0

        def reset(self):
            self.pos = 0

    class TorchLM(nn.Module):
        """The BinaryLM's inference as plain PyTorch eager code with a KV cache.

        Every binary linear layer is an ``nn.Linear`` holding the quantized 0/1
        weights and bias as float32 (computed once from ``binary_weight()`` /
        ``binary_bias()``), so that ``quantize_dynamic`` can convert the whole
        module; the token and position embeddings are lookups of the same bits.
        ``forward(ids, cache)`` mirrors ``LMState.forward``: the ids go through
        every layer as one batch of rows at positions ``cache.pos ..``,
        keys/values are appended to the cache, and the head runs for the last
        position only; returns its scores ``(vocab,)``.
        """

        def __init__(self, model):
            super().__init__()
            with torch.no_grad():
                emb = model.embedding
                # (vocab, D) and (max_len, D): row = token / position
                self.register_buffer("tok_w", emb.token.binary_weight().t().float().contiguous())
                self.register_buffer("tok_b", emb.token.binary_bias().float())
                self.register_buffer("pos_w", emb.position.binary_weight().t().float().contiguous())
                self.register_buffer("pos_b", emb.position.binary_bias().float())
                self.blocks = nn.ModuleList(
                    nn.ModuleDict({"q": linear_of(b.attn.q), "k": linear_of(b.attn.k),
                                   "v": linear_of(b.attn.v), "o": linear_of(b.attn.out),
                                   "ff1": linear_of(b.ff1), "ff2": linear_of(b.ff2)})
                    for b in model.blocks)
                self.head = nn.ModuleList(linear_of(h) for h in model.head)
                self.out = linear_of(model.output)
            self.eps = float(model.eps)
            self.dim, self.heads = model.emb_dim, model.num_heads
            self.head_dim = self.dim // self.heads
            self.num_blocks, self.vocab, self.max_len = (len(self.blocks), model.vocab_size,
                                                         model.max_len)

        def new_cache(self, ctx: int | None = None) -> Cache:
            return Cache(self, self.max_len if ctx is None else ctx)

        def _norm(self, z):
            return F.layer_norm(z, (z.shape[-1],), eps=self.eps)

        def _layer(self, lin, x, act=None):
            y = self._norm(lin(x))
            return F.gelu(y) if act == "gelu" else y

        def forward(self, ids, cache: Cache):
            D, H, hd, norm, layer = self.dim, self.heads, self.head_dim, self._norm, self._layer
            ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
            n, p0 = ids.numel(), cache.pos
            if p0 + n > cache.ctx:
                raise ValueError("context full")
            x = norm(norm(self.tok_w[ids] + self.tok_b) + norm(self.pos_w[p0:p0 + n] + self.pos_b))
            L = p0 + n
            if n == 1:
                mask, causal = None, False  # one query sees the whole cache
            elif p0 == 0:
                mask, causal = None, True
            else:  # query i (position p0 + i) sees keys 0 .. p0 + i
                mask = torch.arange(L)[None, :] <= (p0 + torch.arange(n))[:, None]
                causal = False
            for b, ly in enumerate(self.blocks):
                q = layer(ly["q"], x).view(n, H, hd).transpose(0, 1)
                cache.k[b, :, p0:L] = layer(ly["k"], x).view(n, H, hd).transpose(0, 1)
                cache.v[b, :, p0:L] = layer(ly["v"], x).view(n, H, hd).transpose(0, 1)
                a = F.scaled_dot_product_attention(q, cache.k[b, :, :L], cache.v[b, :, :L],
                                                   attn_mask=mask, is_causal=causal)
                h = norm(x + layer(ly["o"], a.transpose(0, 1).reshape(n, D)))
                x = norm(h + layer(ly["ff2"], layer(ly["ff1"], h, "gelu")))
            cache.pos = L
            y = x[-1:]
            for lin in self.head:
                y = layer(lin, y, "gelu")
            return layer(self.out, y)[0]

    _TorchLM = TorchLM
    return TorchLM


_TorchLM = None


def torch_twin(model, int8: bool = False):
    """The TorchLM twin of a BinaryLM (eval mode); ``int8=True``: its
    ``torch.ao.quantization.quantize_dynamic`` copy (every nn.Linear becomes a
    dynamically quantized int8 Linear: int8 weights, activations quantized per
    call; 0 and 1 are exact in its per-tensor weight scale)."""
    import torch

    twin = _torch_lm_class()(model).eval()
    if not int8:
        return twin
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated; it still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(twin, {torch.nn.Linear},
                                                      dtype=torch.qint8, inplace=True)


class _ByteCounter:
    """A write-only file that only counts bytes (torch.save size without a disk file)."""

    def __init__(self):
        self.n = 0

    def write(self, b):
        self.n += len(b)
        return len(b)

    def flush(self):
        pass


def state_dict_bytes(model) -> int:
    """Bytes that ``torch.save(model.state_dict())`` writes (float32 parameters)."""
    import torch

    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    try:
        c = _ByteCounter()
        torch.save(sd, c)
        return c.n
    except Exception:  # noqa: BLE001 - some torch versions want a seekable file
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "fp32.pt")
            torch.save(sd, p)
            return os.path.getsize(p)


# ----------------------------------------------------------------- engines

class Engines:
    """The four engines for one config: bitnn fp32 and int8 (two LMGraphs of one
    open BnbFile, each with its own LMState) and the torch twin in fp32 and
    dynamic int8 (each with its own KV cache)."""

    def __init__(self, name: str, cfg: dict, seed: int, workdir: str):
        import torch

        import bitnn
        from bitnn import _core

        t0 = time.perf_counter()
        self.name, self.cfg = name, cfg
        self.binary = build_binary_lm(cfg, seed)
        self.params = sum(p.numel() for p in self.binary.parameters())
        self.bnb_path = os.path.join(workdir, f"blm_{name}.bnb")
        bitnn.export(self.binary, self.bnb_path, name=f"blm_{name}_random",
                     training={"note": "random weights (tools/bench_lm.py)", "seed": seed})
        self.bnb_bytes = os.path.getsize(self.bnb_path)
        self.fp32_bytes = state_dict_bytes(self.binary)
        self.file = _core.BnbFile(self.bnb_path)
        self.graphs, self.states, self.twins, self.caches = {}, {}, {}, {}
        for precision in PRECISIONS:
            graph = _core.LMGraph(self.file)
            graph.precision = precision
            self.graphs["bitnn_" + precision] = graph
            self.states["bitnn_" + precision] = graph.new_state(cfg["max_len"])
            twin = torch_twin(self.binary, int8=precision == "int8")
            self.twins["torch_" + precision] = twin
            self.caches["torch_" + precision] = twin.new_cache(cfg["max_len"])
        self.ones_fraction = self._ones_fraction()
        self.setup_s = time.perf_counter() - t0
        self._torch = torch

    def _ones_fraction(self) -> float:
        """Fraction of the stored bits that are 1 (row padding bits are 0)."""
        ones = total = 0
        for nm in self.file.tensor_names:
            ones += int(np.bitwise_count(np.asarray(self.file.tensor(nm))).sum())
            total += int(np.prod(self.file.meta["tensors"][nm]["shape"]))
        return ones / total

    def forward(self, engine: str, ids, threads: int):
        """Feed ids to the engine's state; returns the last position's scores (numpy)."""
        if engine in self.states:
            return self.states[engine].forward(np.asarray(ids, dtype=np.int32), threads=threads)
        with self._torch.inference_mode():
            return self.twins[engine](ids, self.caches[engine]).numpy()

    def reset(self, engine: str):
        (self.states.get(engine) or self.caches[engine]).reset()

    def close(self):
        self.states.clear()
        self.graphs.clear()
        self.file.close()


def _clock():
    return time.perf_counter(), time.process_time()


def time_decode(eng: Engines, engine: str, threads: int, prompt, steps) -> tuple:
    """Prefill `prompt` (not timed), then time len(steps) single-token calls."""
    eng.reset(engine)
    eng.forward(engine, prompt, threads)
    w0, c0 = _clock()
    for tok in steps:
        eng.forward(engine, [tok], threads)
    w1, c1 = _clock()
    return w1 - w0, c1 - c0


def time_prefill(eng: Engines, engine: str, threads: int, prompt) -> tuple:
    eng.reset(engine)
    w0, c0 = _clock()
    eng.forward(engine, prompt, threads)
    w1, c1 = _clock()
    return w1 - w0, c1 - c0


def _decode_fn(eng, threads, prompt, steps, engine):
    return time_decode(eng, engine, threads, prompt, steps)


def _prefill_fn(eng, threads, prompt, engine):
    return time_prefill(eng, engine, threads, prompt)


def measure_cell(eng: Engines, threads: int, fn, n_tokens: int, rounds: int) -> dict:
    """One warm-up call per engine, then `rounds` rounds, the engines' order
    rotating; tokens/s per round, medians over rounds (wall and process CPU
    time), and RATIOS: the first engine's tokens/s over the second's."""
    torch = eng._torch
    torch.set_num_threads(threads)
    for e in ENGINES:
        fn(e)
    timed = time_rounds(fn, ENGINES, rounds)  # {engine: [(wall, cpu) per round]}
    out = {}
    for e in ENGINES:
        walls = [w for w, _ in timed[e]]
        mw, mc = statistics.median(walls), statistics.median([c for _, c in timed[e]])
        out[e] = {"tok_s": n_tokens / mw, "ms_per_tok": 1000 * mw / n_tokens,
                  "cpu_tok_s": n_tokens / mc if mc > 0 else float("nan"),
                  "min_ms_per_tok": 1000 * min(walls) / n_tokens,
                  "rounds": rounds, "tokens_per_round": n_tokens}
    out["ratios"] = {ratio_key(a, b): out[a]["tok_s"] / out[b]["tok_s"] for a, b in RATIOS}
    out["cpu_ratios"] = {ratio_key(a, b): out[a]["cpu_tok_s"] / out[b]["cpu_tok_s"]
                         for a, b in RATIOS}
    return out


# ----------------------------------------------------------------- parity

def _scores_after_steps(eng: Engines, engine: str, ids, prompt_len: int, steps: int):
    """Scores after a prefill of prompt_len ids, then after each of steps-1 single ids."""
    eng.reset(engine)
    got = [eng.forward(engine, ids[:prompt_len], 1)]
    for tok in ids[prompt_len:prompt_len + steps - 1]:
        got.append(eng.forward(engine, [tok], 1))
    return np.stack(got)


def _greedy_check(eng: Engines, prompt, gen_tokens: int) -> dict:
    """``bitnn.load(...).generate`` (fp32, greedy) against a greedy loop of the fp32 twin."""
    import torch

    import bitnn

    model = bitnn.load(eng.bnb_path, threads=1)
    try:
        gen = model.generate(prompt, gen_tokens, temperature=0.0, seed=0)
        stats = dict(model.last_stats or {})
    finally:
        model.close()
    twin = eng.twins["torch_fp32"]
    cache = twin.new_cache()
    with torch.inference_mode():
        s = twin(prompt, cache)
        ref_gen = []
        for _ in range(gen_tokens):
            ref_gen.append(int(s.argmax()))
            s = twin([ref_gen[-1]], cache)
    return {"tokens": gen, "torch_greedy": ref_gen, "equal": gen == ref_gen, "stats": stats}


def parity(eng: Engines, seed: int, prompt_len: int = 16, steps: int = 8,
           gen_tokens: int = 8) -> dict:
    """Next-token scores of every engine against BinaryLM.forward (the reference,
    one full-sequence pass) after a prefill of prompt_len tokens and after each
    of `steps` cached single-token calls. The exact engines (fp32) must agree
    to float rounding; the int8 engines get their max |diff| and the fraction
    of positions whose argmax matches. Then greedy generation through
    ``bitnn.load(...).generate`` against a greedy loop of the fp32 twin."""
    import torch

    torch.set_num_threads(1)
    V, max_len = eng.cfg["vocab_size"], eng.cfg["max_len"]
    prompt_len = min(prompt_len, max_len - steps - gen_tokens)
    rng = np.random.default_rng(seed + 7)
    ids = rng.integers(0, V, prompt_len + steps).tolist()
    got = {e: _scores_after_steps(eng, e, ids, prompt_len, steps) for e in ENGINES}
    with torch.inference_mode():
        full = eng.binary(torch.tensor([ids[:prompt_len + steps - 1]]))[0].numpy()
    ref = full[prompt_len - 1:]
    b, t = got["bitnn_fp32"], got["torch_fp32"]
    am = {"bitnn_fp32": b.argmax(1).tolist(), "torch_fp32": t.argmax(1).tolist(),
          "BinaryLM.forward": ref.argmax(1).tolist()}
    srt = np.sort(ref, axis=1)
    out = {"positions": steps, "prompt_len": prompt_len,
           "max_abs_diff": {"bitnn_fp32 vs torch_fp32": float(np.abs(b - t).max()),
                            "bitnn_fp32 vs BinaryLM.forward": float(np.abs(b - ref).max()),
                            "torch_fp32 vs BinaryLM.forward": float(np.abs(t - ref).max())},
           "argmax_equal": am["bitnn_fp32"] == am["torch_fp32"] == am["BinaryLM.forward"],
           "argmax": am["bitnn_fp32"],
           "score_std": float(ref.std()),
           "min_top2_gap": float((srt[:, -1] - srt[:, -2]).min())}
    out["int8"] = {e: {"max_abs_diff_vs_BinaryLM.forward": float(np.abs(got[e] - ref).max()),
                       "argmax_agreement": float(np.mean(got[e].argmax(1) == ref.argmax(1)))}
                   for e in ("bitnn_int8", "torch_int8")}
    out["generate"] = _greedy_check(eng, ids[:prompt_len], gen_tokens)
    return out


# ----------------------------------------------------------------- peak RSS

def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def rss_child(path: str, threads: int, tokens: int, precision: str) -> None:
    """Run in a fresh process (no torch): load, generate, print a JSON line."""
    r = {"rss_start_kb": _status_kb("VmRSS"), "precision": precision}
    import bitnn

    r["rss_before_load_kb"] = _status_kb("VmRSS")
    r["hwm_before_load_kb"] = _status_kb("VmHWM")
    t0 = time.perf_counter()
    m = bitnn.load(path, threads=threads, precision=precision)
    r["load_s"] = time.perf_counter() - t0
    r["rss_after_load_kb"] = _status_kb("VmRSS")
    prompt = [(7 * i + 3) % m.vocab_size for i in range(16)]
    out = m.generate(prompt, tokens, temperature=0.8, top_k=40, seed=0)
    r["generated"] = len(out)
    r["stats"] = m.last_stats
    r["rss_after_generate_kb"] = _status_kb("VmRSS")
    r["hwm_kb"] = _status_kb("VmHWM")
    r["torch_imported"] = "torch" in sys.modules
    r["file_bytes"] = m.file_size
    m.close()
    print("RSS_JSON " + json.dumps(r))


def measure_rss(path: str, threads: int = 1, tokens: int = 64, precision: str = "fp32") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", path,
           "--threads", str(threads), "--rss-tokens", str(tokens), "--rss-precision", precision]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("RSS_JSON "):
            return json.loads(line[len("RSS_JSON "):])
    raise RuntimeError(f"RSS child failed (rc {p.returncode}): {p.stderr[-2000:]}")


# ----------------------------------------------------------------- targets

# Issue 7, stated for the small config on one thread: (engine, versus, kind,
# minimum of engine tok/s / versus tok/s).
SPEED_TARGETS = (("bitnn_int8", "torch_fp32", "decode", 30.0),
                 ("bitnn_int8", "torch_int8", "decode", 10.0),
                 ("bitnn_int8", "torch_fp32", "prefill", 4.0),
                 ("bitnn_fp32", "torch_fp32", "decode", 20.0))
THREAD_TARGET = 1.8  # bitnn decode tok/s with 2 threads over 1 thread, each precision
BNB_TARGET = 20 * MB  # small .bnb without tokenizer
RSS_MARGIN = 64 * MB  # peak RSS <= file + this


def thread_scaling(results) -> list:
    """bitnn tok/s with 2 threads over 1 thread, per config, measure and precision."""
    one = {(r["config"], r["measure"]): r for r in results if r["threads"] == 1}
    rows = []
    for r in results:
        base = one.get((r["config"], r["measure"]))
        if r["threads"] != 2 or base is None:
            continue
        for e in ENGINES:
            rows.append({"config": r["config"], "measure": r["measure"], "kind": r["kind"],
                         "engine": e, "scaling": r[e]["tok_s"] / base[e]["tok_s"],
                         "cpu_1thread_tok_s": base[e]["cpu_tok_s"]})
    return rows


def evaluate_targets(report) -> list:
    """Every issue-7 target that this run measured, with its value and met/not."""
    out = []
    for r in report["results"]:
        if r["threads"] != 1:
            continue
        for a, b, kind, goal in SPEED_TARGETS:
            if r["kind"] == kind:
                k = ratio_key(a, b)
                out.append({"target": f"{r['config']} {r['measure']}, 1 thread: "
                                      f"{_label(a)} >= {goal:g}x {_label(b)}",
                            "value": r["ratios"][k], "cpu_value": r["cpu_ratios"][k],
                            "goal": goal, "met": r["ratios"][k] >= goal})
    for s in report["thread_scaling"]:
        if s["kind"] == "decode" and s["engine"].startswith("bitnn"):
            out.append({"target": f"{s['config']} {s['measure']}: {_label(s['engine'])} "
                                  f"2 threads >= {THREAD_TARGET:g}x 1 thread",
                        "value": s["scaling"], "goal": THREAD_TARGET,
                        "met": s["scaling"] >= THREAD_TARGET})
    for s in report["sizes"]:
        if s["config"] == "small":
            out.append({"target": "small .bnb <= 20 MB (no tokenizer)", "value": s["bnb_bytes"],
                        "goal": BNB_TARGET, "met": s["bnb_bytes"] <= BNB_TARGET})
    for r in report["rss"]:
        limit = r["file_bytes"] + RSS_MARGIN
        out.append({"target": f"{r['config']} {r['precision']}: peak RSS <= file + 64 MB",
                    "value": r["hwm_kb"] * 1024, "goal": limit,
                    "met": r["hwm_kb"] * 1024 <= limit})
    return out


def fmt_target(t) -> str:
    v, g = t["value"], t["goal"]
    if "RSS" in t["target"] or ".bnb" in t["target"]:
        shown = f"{v / MB:.1f} MB (limit {g / MB:.1f} MB)"
    else:
        shown = f"{v:.2f}x" + (f" ({t['cpu_value']:.2f}x from CPU time)" if "cpu_value" in t
                               else "")
    return f"- {t['target']}: {shown} -> {verdict(t['met'])}"


# ----------------------------------------------------------------- report

def _label(engine: str) -> str:
    return engine.replace("_", " ")


def fmt_speed_table(results) -> str:
    head = ["config", "threads", "measure"] + [f"{_label(e)} tok/s" for e in ENGINES]
    rows = [[r["config"], str(r["threads"]), r["measure"]]
            + [f"{r[e]['tok_s']:.1f}" for e in ENGINES] for r in results]
    return md_table(head, rows, "lrl" + "r" * len(ENGINES))


def fmt_ratio_table(results) -> str:
    head = ["config", "threads", "measure"] + [_label(ratio_key(a, b)) for a, b in RATIOS]
    rows = []
    for r in results:
        cells = [r["config"], str(r["threads"]), r["measure"]]
        for a, b in RATIOS:
            k = ratio_key(a, b)
            cells.append(f"**{r['ratios'][k]:.1f}x** ({r['cpu_ratios'][k]:.1f}x)")
        rows.append(cells)
    return md_table(head, rows, "lrl" + "r" * len(RATIOS))


def fmt_cpu_table(results) -> str:
    head = ["config", "measure"] + [f"{_label(e)} tok/s" for e in ENGINES]
    rows = [[r["config"], r["measure"]] + [f"{r[e]['cpu_tok_s']:.1f}" for e in ENGINES]
            for r in results if r["threads"] == 1]
    return md_table(head, rows, "ll" + "r" * len(ENGINES))


def fmt_scaling_table(rows) -> str:
    cells = {}
    for s in rows:
        cells.setdefault((s["config"], s["measure"]), {})[s["engine"]] = s["scaling"]
    return md_table(["config", "measure"] + [_label(e) for e in ENGINES],
                    [[config, measure] + [f"{by[e]:.2f}x" for e in ENGINES]
                     for (config, measure), by in cells.items()], "ll" + "r" * len(ENGINES))


def fmt_size_table(sizes) -> str:
    rows = [[s["config"], f"{s['params']:,}", f"{100 * s['ones_fraction']:.1f}%",
             f"{s['bnb_bytes']:,}", f"{s['fp32_bytes']:,}",
             f"{s['fp32_bytes'] / s['bnb_bytes']:.1f}x"] for s in sizes]
    return md_table(["config", "parameters", "bits set", ".bnb bytes", "fp32 state_dict bytes",
                     "fp32 / .bnb"], rows, "lrrrrr")


def fmt_rss_table(rss) -> str:
    kb = 1024 / MB
    rows = [[r["config"], r["precision"], f"{r['file_bytes'] / MB:.1f}",
             f"{r['rss_start_kb'] * kb:.1f}", f"{r['rss_before_load_kb'] * kb:.1f}",
             f"{r['rss_after_load_kb'] * kb:.1f}", f"{r['hwm_kb'] * kb:.1f}",
             f"{(r['hwm_kb'] - r['rss_before_load_kb']) * kb:.1f}",
             f"{(r['file_bytes'] + RSS_MARGIN) / MB:.1f}"] for r in rss]
    return md_table(["config", "precision", "file MB", "RSS before import MB",
                     "RSS before load MB", "RSS after load MB", "peak RSS (VmHWM) MB",
                     "peak - before load MB", "limit file + 64 MB"], rows, "llrrrrrrr")


def print_tables(report, rss_tokens: int) -> None:
    results = report["results"]
    print("\n## Tokens/s (median over rounds; wall clock)\n")
    print(fmt_speed_table(results))
    print("\n## Ratios: the first engine's tokens/s over the second's (wall clock; "
          "from process CPU time in parentheses)\n")
    print(fmt_ratio_table(results))
    print("\nAbove 1: the first engine is faster.")
    print("\n## One thread, tokens/s from process CPU time\n")
    print(fmt_cpu_table(results))
    if report["thread_scaling"]:
        print("\n## 2 threads over 1 thread (tokens/s, wall clock)\n")
        print(fmt_scaling_table(report["thread_scaling"]))
    print("\n## Model size\n")
    print(fmt_size_table(report["sizes"]))
    if report["rss"]:
        print("\n## Peak RSS while generating (separate process: bitnn only, 1 thread, "
              f"{rss_tokens} tokens after a 16-token prompt; MB = 10^6 bytes)\n")
        print(fmt_rss_table(report["rss"]))


# ----------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="the small config shrunk to 2 blocks, few steps and rounds (~1 min)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated config names (default small,large; --quick: small)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--contexts", default="16,200", help="decode contexts (cache fill)")
    ap.add_argument("--prefill", type=int, default=128, help="prefill prompt length")
    ap.add_argument("--steps", type=int, default=None, help="decode steps timed per round")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    # internal: the peak-RSS child process
    ap.add_argument("--rss-child", metavar="BNB", help=argparse.SUPPRESS)
    ap.add_argument("--rss-tokens", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--rss-precision", default="fp32", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for flag in ("threads", "contexts"):
        try:
            vals = [int(v) for v in getattr(args, flag).split(",")]
        except ValueError:
            ap.error(f"--{flag} must be comma-separated integers, got {getattr(args, flag)!r}")
        if not vals or min(vals) < 1:
            ap.error(f"--{flag} values must be at least 1")
    for flag in ("prefill", "steps", "rounds"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            ap.error(f"--{flag} must be at least 1")
    return args


def start_report(args) -> dict:
    """The report skeleton; prints the header (date, CPU, versions, load)."""
    return begin_report("BLM decoder benchmark", machine_info(), ("torch", "python", "numpy"),
                        args={k: v for k, v in vars(args).items() if not k.startswith("rss")},
                        engines=list(ENGINES), configs={}, sizes=[], parity=[], results=[],
                        rss=[])


def record_size(eng: Engines, label: str, name: str, quick: bool, report) -> None:
    report["sizes"].append({"config": label, "params": eng.params, "bnb_bytes": eng.bnb_bytes,
                            "fp32_bytes": eng.fp32_bytes, "ones_fraction": eng.ones_fraction,
                            "paper_params": PAPER_PARAMS.get(name) if not quick else None})
    print(f"built, exported and twinned in {eng.setup_s:.1f} s: {eng.params:,} parameters, "
          f".bnb {eng.bnb_bytes:,} bytes ({100 * eng.ones_fraction:.1f}% ones), "
          f"fp32 state_dict {eng.fp32_bytes:,} bytes")


def record_parity(eng: Engines, label: str, seed: int, report) -> None:
    p = parity(eng, seed)
    p["config"] = label
    report["parity"].append(p)
    d = p["max_abs_diff"]
    print(f"parity ({p['positions']} positions after a {p['prompt_len']}-token prefill, "
          f"cached steps): max|bitnn fp32 - torch fp32| {d['bitnn_fp32 vs torch_fp32']:.2e}, "
          f"max|bitnn fp32 - BinaryLM.forward| {d['bitnn_fp32 vs BinaryLM.forward']:.2e}, "
          f"max|torch fp32 - BinaryLM.forward| {d['torch_fp32 vs BinaryLM.forward']:.2e}; "
          f"argmax equal: {p['argmax_equal']}; scores std {p['score_std']:.3f}, "
          f"smallest top-2 gap {p['min_top2_gap']:.3f}")
    for e, q in p["int8"].items():
        print(f"int8 parity, {_label(e)} vs BinaryLM.forward: max|diff| "
              f"{q['max_abs_diff_vs_BinaryLM.forward']:.3f}, argmax agrees at "
              f"{100 * q['argmax_agreement']:.0f}% of the {p['positions']} positions")
    g = p["generate"]
    print(f"bitnn.load(...).generate (fp32, greedy, {len(g['tokens'])} tokens) equals the torch "
          f"greedy loop: {g['equal']}  {g['tokens']}")
    sys.stdout.flush()


def _print_cell(row) -> None:
    speeds = ", ".join(f"{_label(e)} {row[e]['tok_s']:.1f}" for e in ENGINES)
    ratios = ", ".join(f"{_label(ratio_key(a, b))} {row['ratios'][ratio_key(a, b)]:.1f}x"
                       for a, b in RATIOS[:3])
    print(f"  threads {row['threads']} {row['measure']}: tok/s {speeds}; {ratios} "
          f"(load {load_now()})")
    sys.stdout.flush()


def record_speed(eng: Engines, label: str, args, threads, contexts, steps, rounds,
                 report) -> None:
    """Decode at each context and the prefill, for each thread count."""
    V, max_len = eng.cfg["vocab_size"], eng.cfg["max_len"]
    ids = np.random.default_rng(args.seed + 1).integers(0, V, max_len).tolist()
    for t in threads:
        cells = []
        for c in contexts:
            c_eff = max(1, min(c, max_len - steps))
            fn = functools.partial(_decode_fn, eng, t, ids[:c_eff], ids[c_eff:c_eff + steps])
            cells.append(({"measure": f"decode @ ctx {c_eff}", "kind": "decode",
                           "context": c_eff}, fn, steps))
        n = min(args.prefill, max_len)
        cells.append(({"measure": f"prefill {n}", "kind": "prefill", "context": n},
                      functools.partial(_prefill_fn, eng, t, ids[:n]), n))
        for what, fn, n_tokens in cells:
            row = {"config": label, "threads": t, **what}
            row.update(measure_cell(eng, t, fn, n_tokens, rounds))
            report["results"].append(row)
            _print_cell(row)


def record_rss(eng: Engines, label: str, tokens: int, report) -> None:
    for precision in PRECISIONS:
        r = measure_rss(eng.bnb_path, 1, tokens, precision)
        r["config"] = label
        report["rss"].append(r)
        print(f"peak RSS ({precision}; separate process, bitnn only, 1 thread, "
              f"{r['generated']} tokens): VmHWM {r['hwm_kb'] * 1024 / MB:.1f} MB, before load "
              f"{r['rss_before_load_kb'] * 1024 / MB:.1f} MB, file {r['file_bytes'] / MB:.1f} MB")
        sys.stdout.flush()


def bench_config(args, name: str, cfg: dict, threads, contexts, workdir: str, report) -> None:
    """Everything measured for one config: size, parity, speed, peak RSS."""
    quick = args.quick
    if quick and name in CONFIGS:
        cfg["num_blocks"] = 2
    steps, rounds = (4, 2) if quick else SCHEDULE.get(name, (8, 3))
    steps, rounds = args.steps or steps, args.rounds or rounds
    label = name + (" (2 blocks)" if quick and name in CONFIGS else "")
    report["configs"][label] = cfg
    print(f"\n## {label}: {cfg}")
    sys.stdout.flush()
    eng = Engines(name, cfg, args.seed, workdir)
    try:
        record_size(eng, label, name, quick, report)
        record_parity(eng, label, args.seed, report)
        record_speed(eng, label, args, threads, contexts, steps, rounds, report)
        if not args.no_rss:
            record_rss(eng, label, args.rss_tokens, report)
    finally:
        eng.close()


def run(args, configs: dict | None = None) -> dict:
    """The benchmark; ``configs`` (name -> BinaryLM shape) adds to / overrides CONFIGS."""
    import torch

    all_cfgs = dict(CONFIGS)
    all_cfgs.update(configs or {})
    names = (args.configs.split(",") if args.configs
             else (["small"] if args.quick else ["small", "large"]))
    unknown = [n for n in names if n not in all_cfgs]
    if unknown:
        raise UsageError(f"unknown config {', '.join(unknown)}; known: {', '.join(all_cfgs)}")
    threads = [int(v) for v in args.threads.split(",")]
    contexts = [int(v) for v in args.contexts.split(",")]
    t_start = time.time()
    report = start_report(args)
    with tempfile.TemporaryDirectory(prefix="bench_lm_") as workdir:
        for name in names:
            bench_config(args, name, dict(all_cfgs[name]), threads, contexts, workdir, report)
    torch.set_num_threads(max(threads))
    stop_report_clock(report, t_start)
    report["thread_scaling"] = thread_scaling(report["results"])
    print_tables(report, args.rss_tokens)
    report["targets"] = evaluate_targets(report)
    print("\n## Targets (issue 7: stated for the small config on one thread; "
          "other configs for reference)\n")
    for t in report["targets"]:
        print(fmt_target(t))
    close_report(report, args.json)
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, int(args.threads.split(",")[0]), args.rss_tokens,
                  args.rss_precision)
        return 0
    try:
        run(args)
    except UsageError as e:
        print(f"bench_lm: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
