#!/usr/bin/env python3
"""Speed, size and memory of the BLM language decoder (PAPER.md section 4):
bitnn's C runtime against a PyTorch fp32 eager implementation of the same
model with a KV cache, side by side in one run.

Models: the paper's ``small`` (max_len 256, 12 blocks, emb_dim 768, 16 heads,
MLP head 4096-2048, vocab 30522: 154.4 M parameters) and ``large`` (16 blocks,
emb_dim 1024, MLP head 8192-4096: 332.8 M) configs as ``bitnn.nn.BinaryLM``
with seeded random weights (Glorot uniform, as built) and normal random
biases, so that every tensor's bits are about half ones. No training.

- bitnn: the model exported with ``bitnn.export`` (no tokenizer) and run
  through the low-level API: ``LMGraph(BnbFile(path))``,
  ``state = graph.new_state(max_len)``, ``state.forward(ids, threads=t)``.
  ``bitnn.load(path).generate`` is checked once (greedy, against the torch
  twin) but not timed.
- torch: :class:`TorchLM`, an fp32 eager module holding the BinaryLM's
  quantized 0/1 weights as float32 tensors (computed once), doing the same
  maths: Normalize as ``F.layer_norm`` without affine, causal
  ``F.scaled_dot_product_attention`` over a preallocated KV cache, exact gelu,
  and the MLP head / output layer for the last position only.
  ``torch.set_num_threads(t)``, ``torch.inference_mode()``.

Measured for each config and thread count (both engines fed the same ids):

- decode at context C (16 and 200): prefill C tokens (not timed), then time
  the next ``steps`` single-token forward calls (KV cache holding C .. C+steps-1
  positions); tokens/s = steps / time;
- prefill: one batched forward call of a 128-token prompt into an empty cache.

Each cell is warmed up once, then timed in ``repeats`` rounds, the two
engines alternating inside each round (so both see the same background
load); the tables give medians over rounds. Besides the wall clock, the
process CPU time (``time.process_time``) of the same calls is recorded: with
one thread it is what a call costs when it has a core of its own, the fairer
figure on a busy machine.

Also: next-token score parity (bitnn vs torch twin vs ``BinaryLM.forward``)
on a prefill and on cached single-token steps; the .bnb file size next to the
fp32 state_dict (``torch.save``) size; and the peak RSS (VmHWM) of a separate
process that imports only bitnn (no torch), loads the model and generates
64 tokens.

    python3 tools/bench_lm.py --json bench_lm.json    # small and large (~10 min on 2 busy cores)
    python3 tools/bench_lm.py --configs small
    python3 tools/bench_lm.py --quick                 # small shrunk to 2 blocks, < 1 min
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from common import machine_info as _base_machine_info  # noqa: E402

ENGINES = ("bitnn", "torch")

# PAPER.md section 4, Table: the two BLM configs.
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


class TorchLM:
    """The BinaryLM's inference as plain fp32 PyTorch eager code with a KV cache.

    Holds the quantized 0/1 weights as float32 tensors (computed once from
    ``binary_weight()`` / ``binary_bias()``); ``forward(ids, cache)`` mirrors
    ``LMState.forward``: the ids go through every layer as one batch of rows
    at positions ``cache.pos ..``, keys/values are appended to the cache, and
    the head runs for the last position only; returns its scores ``(vocab,)``.
    """

    class Cache:
        def __init__(self, lm: TorchLM, ctx: int):
            import torch

            shape = (lm.blocks, lm.heads, ctx, lm.head_dim)
            self.k = torch.zeros(shape)
            self.v = torch.zeros(shape)
            self.ctx, self.pos = ctx, 0

        def reset(self):
            self.pos = 0

    def __init__(self, model):
        import torch

        def lin(m):
            return (m.binary_weight().float().contiguous(), m.binary_bias().float().contiguous())

        with torch.no_grad():
            emb = model.embedding
            self.tok_w = emb.token.binary_weight().t().contiguous()  # (vocab, D): row = token
            self.tok_b = emb.token.binary_bias()
            self.pos_w = emb.position.binary_weight().t().contiguous()  # (max_len, D)
            self.pos_b = emb.position.binary_bias()
            self.layers = [{"q": lin(b.attn.q), "k": lin(b.attn.k), "v": lin(b.attn.v),
                            "o": lin(b.attn.out), "ff1": lin(b.ff1), "ff2": lin(b.ff2)}
                           for b in model.blocks]
            self.head = [lin(h) for h in model.head]
            self.out = lin(model.output)
        self.eps = float(model.eps)
        self.dim, self.heads = model.emb_dim, model.num_heads
        self.head_dim = self.dim // self.heads
        self.blocks, self.vocab, self.max_len = len(self.layers), model.vocab_size, model.max_len
        self._torch = torch

    def new_cache(self, ctx: int | None = None) -> TorchLM.Cache:
        return TorchLM.Cache(self, self.max_len if ctx is None else ctx)

    def forward(self, ids, cache: TorchLM.Cache):
        torch = self._torch
        F = torch.nn.functional
        D, H, hd, eps = self.dim, self.heads, self.head_dim, self.eps

        def norm(z):
            return F.layer_norm(z, (D,), eps=eps)

        def lin(x, wb, act=None):
            w, b = wb
            y = F.layer_norm(F.linear(x, w, b), (w.shape[0],), eps=eps)
            return F.gelu(y) if act == "gelu" else y

        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        n, p0 = ids.numel(), cache.pos
        if p0 + n > cache.ctx:
            raise ValueError("context full")
        x = norm(norm(self.tok_w[ids] + self.tok_b)
                 + norm(self.pos_w[p0:p0 + n] + self.pos_b))
        L = p0 + n
        if n == 1:
            mask, causal = None, False  # one query sees the whole cache
        elif p0 == 0:
            mask, causal = None, True
        else:  # query i (position p0 + i) sees keys 0 .. p0 + i
            mask = torch.arange(L)[None, :] <= (p0 + torch.arange(n))[:, None]
            causal = False
        for b, ly in enumerate(self.layers):
            q = lin(x, ly["q"]).view(n, H, hd).transpose(0, 1)
            cache.k[b, :, p0:L] = lin(x, ly["k"]).view(n, H, hd).transpose(0, 1)
            cache.v[b, :, p0:L] = lin(x, ly["v"]).view(n, H, hd).transpose(0, 1)
            a = F.scaled_dot_product_attention(q, cache.k[b, :, :L], cache.v[b, :, :L],
                                               attn_mask=mask, is_causal=causal)
            h = norm(x + lin(a.transpose(0, 1).reshape(n, D), ly["o"]))
            x = norm(h + lin(lin(h, ly["ff1"], "gelu"), ly["ff2"]))
        cache.pos = L
        y = x[-1:]
        for wb in self.head:
            y = lin(y, wb, "gelu")
        return lin(y, self.out)[0]


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
    """Both engines for one config: bitnn (LMGraph/LMState) and the torch twin."""

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
        self.twin = TorchLM(self.binary)
        self.file = _core.BnbFile(self.bnb_path)
        self.graph = _core.LMGraph(self.file)
        self.state = self.graph.new_state(cfg["max_len"])
        self.cache = self.twin.new_cache(cfg["max_len"])
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
        if engine == "bitnn":
            return self.state.forward(np.asarray(ids, dtype=np.int32), threads=threads)
        with self._torch.inference_mode():
            return self.twin.forward(ids, self.cache).numpy()

    def reset(self, engine: str):
        (self.state if engine == "bitnn" else self.cache).reset()

    def close(self):
        self.state = self.graph = None
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


def _decode_fn(eng, threads, prompt, steps, engine):
    return time_decode(eng, engine, threads, prompt, steps)


def _prefill_fn(eng, threads, prompt, engine):
    return time_prefill(eng, engine, threads, prompt)


def time_prefill(eng: Engines, engine: str, threads: int, prompt) -> tuple:
    eng.reset(engine)
    w0, c0 = _clock()
    eng.forward(engine, prompt, threads)
    w1, c1 = _clock()
    return w1 - w0, c1 - c0


def measure_cell(eng: Engines, threads: int, fn, n_tokens: int, rounds: int) -> dict:
    """One warm-up call per engine, then `rounds` rounds alternating the engines'
    order; tokens/s per round, medians over rounds (wall and process CPU time)."""
    torch = eng._torch
    torch.set_num_threads(threads)
    for e in ENGINES:
        fn(e)
    walls = {e: [] for e in ENGINES}
    cpus = {e: [] for e in ENGINES}
    for r in range(rounds):
        for e in (ENGINES if r % 2 == 0 else ENGINES[::-1]):
            w, c = fn(e)
            walls[e].append(w)
            cpus[e].append(c)
    out = {}
    for e in ENGINES:
        mw, mc = statistics.median(walls[e]), statistics.median(cpus[e])
        out[e] = {"tok_s": n_tokens / mw, "ms_per_tok": 1000 * mw / n_tokens,
                  "cpu_tok_s": n_tokens / mc if mc > 0 else float("nan"),
                  "min_ms_per_tok": 1000 * min(walls[e]) / n_tokens,
                  "rounds": rounds, "tokens_per_round": n_tokens}
    out["speedup"] = out["bitnn"]["tok_s"] / out["torch"]["tok_s"]
    out["cpu_speedup"] = out["bitnn"]["cpu_tok_s"] / out["torch"]["cpu_tok_s"]
    return out


# ----------------------------------------------------------------- parity

def parity(eng: Engines, seed: int, prompt_len: int = 16, steps: int = 8,
           gen_tokens: int = 8) -> dict:
    """Next-token scores of bitnn, the torch twin and BinaryLM.forward (the
    reference, one full-sequence pass) after a prefill of prompt_len tokens and
    after each of `steps` cached single-token calls; then greedy generation
    through ``bitnn.load(...).generate`` against a greedy loop of the twin."""
    import torch

    import bitnn

    torch.set_num_threads(1)
    V, max_len = eng.cfg["vocab_size"], eng.cfg["max_len"]
    prompt_len = min(prompt_len, max_len - steps - gen_tokens)
    rng = np.random.default_rng(seed + 7)
    ids = rng.integers(0, V, prompt_len + steps).tolist()
    got = {"bitnn": [], "torch": []}
    for e in ENGINES:
        eng.reset(e)
        got[e].append(eng.forward(e, ids[:prompt_len], 1))
        for tok in ids[prompt_len:prompt_len + steps - 1]:
            got[e].append(eng.forward(e, [tok], 1))
    with torch.inference_mode():
        full = eng.binary(torch.tensor([ids[:prompt_len + steps - 1]]))[0].numpy()
    ref = full[prompt_len - 1:]
    b, t = np.stack(got["bitnn"]), np.stack(got["torch"])
    am = {"bitnn": b.argmax(1).tolist(), "torch": t.argmax(1).tolist(),
          "BinaryLM.forward": ref.argmax(1).tolist()}
    srt = np.sort(ref, axis=1)
    out = {"positions": steps, "prompt_len": prompt_len,
           "max_abs_diff": {"bitnn vs torch": float(np.abs(b - t).max()),
                            "bitnn vs BinaryLM.forward": float(np.abs(b - ref).max()),
                            "torch vs BinaryLM.forward": float(np.abs(t - ref).max())},
           "argmax_equal": am["bitnn"] == am["torch"] == am["BinaryLM.forward"],
           "argmax": am["bitnn"],
           "score_std": float(ref.std()),
           "min_top2_gap": float((srt[:, -1] - srt[:, -2]).min())}
    # bitnn.load(...).generate, greedy, vs a greedy loop of the twin.
    model = bitnn.load(eng.bnb_path, threads=1)
    try:
        gen = model.generate(ids[:prompt_len], gen_tokens, temperature=0.0, seed=0)
        stats = dict(model.last_stats or {})
    finally:
        model.close()
    cache = eng.twin.new_cache()
    with torch.inference_mode():
        s = eng.twin.forward(ids[:prompt_len], cache)
        ref_gen = []
        for _ in range(gen_tokens):
            ref_gen.append(int(s.argmax()))
            s = eng.twin.forward([ref_gen[-1]], cache)
    out["generate"] = {"tokens": gen, "torch_greedy": ref_gen, "equal": gen == ref_gen,
                       "stats": stats}
    return out


# ----------------------------------------------------------------- peak RSS

def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def rss_child(path: str, threads: int, tokens: int) -> None:
    """Run in a fresh process (no torch): load, generate, print a JSON line."""
    r = {"rss_start_kb": _status_kb("VmRSS")}
    import bitnn

    r["rss_before_load_kb"] = _status_kb("VmRSS")
    r["hwm_before_load_kb"] = _status_kb("VmHWM")
    t0 = time.perf_counter()
    m = bitnn.load(path, threads=threads)
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


def measure_rss(path: str, threads: int = 1, tokens: int = 64) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", path,
           "--threads", str(threads), "--rss-tokens", str(tokens)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("RSS_JSON "):
            return json.loads(line[len("RSS_JSON "):])
    raise RuntimeError(f"RSS child failed (rc {p.returncode}): {p.stderr[-2000:]}")


# ----------------------------------------------------------------- report

def fmt_speed_table(results) -> str:
    head = ["config", "threads", "measure", "bitnn tok/s", "torch fp32 tok/s", "bitnn / torch",
            "bitnn ms/tok", "torch ms/tok", "CPU-time bitnn / torch"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        b, t = r["bitnn"], r["torch"]
        lines.append(f"| {r['config']} | {r['threads']} | {r['measure']} | {b['tok_s']:.1f} | "
                     f"{t['tok_s']:.1f} | **{r['speedup']:.1f}x** | {b['ms_per_tok']:.2f} | "
                     f"{t['ms_per_tok']:.2f} | {r['cpu_speedup']:.1f}x |")
    return "\n".join(lines)


def fmt_cpu_table(results) -> str:
    lines = [("| config | measure | bitnn tok/s (CPU time) | torch fp32 tok/s (CPU time) | "
              "bitnn / torch |"), "|---|---|---:|---:|---:|"]
    for r in results:
        if r["threads"] != 1:
            continue
        lines.append(f"| {r['config']} | {r['measure']} | {r['bitnn']['cpu_tok_s']:.1f} | "
                     f"{r['torch']['cpu_tok_s']:.1f} | {r['cpu_speedup']:.1f}x |")
    return "\n".join(lines)


def fmt_size_table(sizes) -> str:
    lines = [("| config | parameters | bits set | .bnb bytes | fp32 state_dict bytes | "
              "fp32 / .bnb | .bnb <= 20 MB |"), "|---|---:|---:|---:|---:|---:|---|"]
    for s in sizes:
        ok = "yes" if s["bnb_bytes"] <= 20 * MB else "no"
        lines.append(f"| {s['config']} | {s['params']:,} | {100 * s['ones_fraction']:.1f}% | "
                     f"{s['bnb_bytes']:,} | {s['fp32_bytes']:,} | "
                     f"{s['fp32_bytes'] / s['bnb_bytes']:.1f}x | "
                     f"{ok if s['config'] == 'small' else '-'} |")
    return "\n".join(lines)


def fmt_rss_table(rss) -> str:
    lines = [("| config | file MB | RSS before import MB | RSS before load MB | "
              "RSS after load MB | peak RSS (VmHWM) MB | peak - before load MB | "
              "target file + 64 MB | met |"), "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rss:
        kb = 1024 / MB
        hwm = r["hwm_kb"] * kb
        target = r["file_bytes"] / MB + 64
        lines.append(f"| {r['config']} | {r['file_bytes'] / MB:.1f} | {r['rss_start_kb'] * kb:.1f} | "
                     f"{r['rss_before_load_kb'] * kb:.1f} | {r['rss_after_load_kb'] * kb:.1f} | "
                     f"{hwm:.1f} | {(r['hwm_kb'] - r['rss_before_load_kb']) * kb:.1f} | "
                     f"{target:.1f} | {'yes' if hwm <= target else 'no'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="the small config shrunk to 2 blocks, few steps and rounds (< 1 min)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated config names (default small,large; --quick: small)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--contexts", default="16,200", help="decode contexts (cache fill)")
    ap.add_argument("--prefill", type=int, default=128, help="prefill prompt length")
    ap.add_argument("--steps", type=int, default=None, help="decode steps timed per round")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocess")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    # internal: the peak-RSS child process
    ap.add_argument("--rss-child", metavar="BNB", help=argparse.SUPPRESS)
    ap.add_argument("--rss-tokens", type=int, default=64, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run(args, configs: dict | None = None) -> dict:
    """The benchmark; ``configs`` (name -> BinaryLM shape) adds to / overrides CONFIGS."""
    import torch

    all_cfgs = dict(CONFIGS)
    all_cfgs.update(configs or {})
    quick = args.quick
    names = (args.configs.split(",") if args.configs else (["small"] if quick else
                                                           ["small", "large"]))
    threads = [int(v) for v in args.threads.split(",")]
    contexts = [int(v) for v in args.contexts.split(",")]
    t_start = time.time()
    report = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": _base_machine_info(), "loadavg_start": list(os.getloadavg()),
              "args": {k: v for k, v in vars(args).items() if not k.startswith("rss")},
              "configs": {}, "sizes": [], "parity": [], "results": [], "rss": []}
    m = report["machine"]
    print(f"# BLM decoder benchmark  {report['date']}")
    print(f"cpu: {m['cpu']} ({m['cpus']} logical CPUs)  torch {m.get('torch')}  "
          f"python {m['python']}")
    print(f"bitnn.system_info(): {m['bitnn']}")
    print("load average at start: " + " ".join(f"{v:.2f}" for v in report["loadavg_start"]))
    sys.stdout.flush()

    with tempfile.TemporaryDirectory(prefix="bench_lm_") as workdir:
        for name in names:
            cfg = dict(all_cfgs[name])
            if quick and name in CONFIGS:
                cfg["num_blocks"] = 2
            steps, rounds = SCHEDULE.get(name, (8, 3))
            if quick:
                steps, rounds = 4, 2
            steps = args.steps or steps
            rounds = args.rounds or rounds
            label = name + (" (2 blocks)" if quick and name in CONFIGS else "")
            report["configs"][label] = cfg
            print(f"\n## {label}: {cfg}")
            sys.stdout.flush()
            eng = Engines(name, cfg, args.seed, workdir)
            size = {"config": label, "params": eng.params, "bnb_bytes": eng.bnb_bytes,
                    "fp32_bytes": eng.fp32_bytes, "ones_fraction": eng.ones_fraction,
                    "paper_params": PAPER_PARAMS.get(name) if not quick else None}
            report["sizes"].append(size)
            print(f"built, exported and twinned in {eng.setup_s:.1f} s: {eng.params:,} parameters, "
                  f".bnb {eng.bnb_bytes:,} bytes ({100 * eng.ones_fraction:.1f}% ones), "
                  f"fp32 state_dict {eng.fp32_bytes:,} bytes")
            p = parity(eng, args.seed)
            p["config"] = label
            report["parity"].append(p)
            d = p["max_abs_diff"]
            print(f"parity ({p['positions']} positions after a {p['prompt_len']}-token prefill, "
                  f"cached steps): max|bitnn-torch| {d['bitnn vs torch']:.2e}, "
                  f"max|bitnn-BinaryLM.forward| {d['bitnn vs BinaryLM.forward']:.2e}, "
                  f"max|torch-BinaryLM.forward| {d['torch vs BinaryLM.forward']:.2e}; "
                  f"argmax equal: {p['argmax_equal']}; scores std {p['score_std']:.3f}, "
                  f"smallest top-2 gap {p['min_top2_gap']:.3f}")
            g = p["generate"]
            print(f"bitnn.load(...).generate (greedy, {len(g['tokens'])} tokens) equals the torch "
                  f"greedy loop: {g['equal']}  {g['tokens']}")
            sys.stdout.flush()

            V, max_len = cfg["vocab_size"], cfg["max_len"]
            rng = np.random.default_rng(args.seed + 1)
            ids = rng.integers(0, V, max_len).tolist()
            for t in threads:
                for c in contexts:
                    c_eff = max(1, min(c, max_len - steps))
                    prompt, nxt = ids[:c_eff], ids[c_eff:c_eff + steps]
                    fn = functools.partial(_decode_fn, eng, t, prompt, nxt)
                    row = {"config": label, "threads": t, "measure": f"decode @ ctx {c_eff}",
                           "kind": "decode", "context": c_eff}
                    row.update(measure_cell(eng, t, fn, steps, rounds))
                    report["results"].append(row)
                    print(f"  threads {t} decode @ {c_eff:3d}: bitnn {row['bitnn']['tok_s']:8.1f} "
                          f"tok/s, torch {row['torch']['tok_s']:7.1f} tok/s -> "
                          f"{row['speedup']:.1f}x (CPU time {row['cpu_speedup']:.1f}x) "
                          f"(load {os.getloadavg()[0]:.2f})")
                    sys.stdout.flush()
                n = min(args.prefill, max_len)
                fn = functools.partial(_prefill_fn, eng, t, ids[:n])
                row = {"config": label, "threads": t, "measure": f"prefill {n}",
                       "kind": "prefill", "context": n}
                row.update(measure_cell(eng, t, fn, n, rounds))
                report["results"].append(row)
                print(f"  threads {t} prefill {n}: bitnn {row['bitnn']['tok_s']:8.1f} tok/s, "
                      f"torch {row['torch']['tok_s']:7.1f} tok/s -> {row['speedup']:.1f}x "
                      f"(CPU time {row['cpu_speedup']:.1f}x) (load {os.getloadavg()[0]:.2f})")
                sys.stdout.flush()
            if not args.no_rss:
                r = measure_rss(eng.bnb_path, 1, args.rss_tokens)
                r["config"] = label
                report["rss"].append(r)
                print(f"peak RSS (separate process, bitnn only, 1 thread, {r['generated']} tokens): "
                      f"VmHWM {r['hwm_kb'] * 1024 / MB:.1f} MB, before load "
                      f"{r['rss_before_load_kb'] * 1024 / MB:.1f} MB, file "
                      f"{r['file_bytes'] / MB:.1f} MB")
                sys.stdout.flush()
            eng.close()
            del eng
    torch.set_num_threads(max(threads))
    report["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = time.time() - t_start

    print("\n## Tokens/s (median over rounds; wall clock)\n")
    print(fmt_speed_table(report["results"]))
    print("\n`bitnn / torch`: torch's time over bitnn's (above 1: bitnn is faster). "
          "`CPU-time bitnn / torch`: the same from process CPU time.")
    print("\n## One thread, from process CPU time\n")
    print(fmt_cpu_table(report["results"]))
    print("\n## Model size\n")
    print(fmt_size_table(report["sizes"]))
    if report["rss"]:
        print("\n## Peak RSS while generating (separate process: bitnn only, 1 thread, "
              f"{args.rss_tokens} tokens after a 16-token prompt; MB = 10^6 bytes)\n")
        print(fmt_rss_table(report["rss"]))
    print("\n## Targets\n")
    report["targets"] = targets = []
    for r in report["results"]:
        if r["config"] == "small" and r["threads"] == 1 and r["kind"] == "decode":
            ok = r["speedup"] >= 15
            targets.append({"target": f"small decode @ ctx {r['context']}, 1 thread >= 15x torch",
                            "value": r["speedup"], "cpu_value": r["cpu_speedup"], "met": ok})
            print(f"- small-config decode @ ctx {r['context']}, 1 thread, >= 15x PyTorch fp32: "
                  f"{r['speedup']:.1f}x wall ({r['cpu_speedup']:.1f}x CPU time) -> "
                  f"{'met' if ok else 'NOT met'}")
    for s in report["sizes"]:
        if s["config"] == "small":
            ok = s["bnb_bytes"] <= 20 * MB
            targets.append({"target": "small .bnb <= 20 MB (no tokenizer)",
                            "value": s["bnb_bytes"], "met": ok})
            print(f"- small .bnb <= 20 MB (+ tokenizer; none stored here): "
                  f"{s['bnb_bytes'] / MB:.2f} MB -> {'met' if ok else 'NOT met'}")
    for r in report["rss"]:
        ok = r["hwm_kb"] * 1024 <= r["file_bytes"] + 64 * MB
        targets.append({"target": f"{r['config']} peak RSS <= file + 64 MB",
                        "value": r["hwm_kb"] * 1024, "met": ok})
        print(f"- {r['config']} peak RSS <= file + 64 MB: {r['hwm_kb'] * 1024 / MB:.1f} MB vs "
              f"{r['file_bytes'] / MB + 64:.1f} MB -> {'met' if ok else 'NOT met'}")
    print("\nload average at end: " + " ".join(f"{v:.2f}" for v in report["loadavg_end"])
          + f"; wall time {report['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
        print(f"wrote {args.json}")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, int(args.threads.split(",")[0]), args.rss_tokens)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
