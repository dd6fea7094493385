"""Header-aware fuzzing of .bnb model files (issue: every malformed header is a FormatError).

A case takes a real model file, changes one to three things in its JSON header the
way a buggy exporter or a hostile author would (delete a key, delete, duplicate or
swap list elements, change a value's type, put in an extreme or off-by-one number,
rename a key, point a tensor reference at another tensor, ...), writes the header
back with a valid checksum, loads the result from memory and, if it loads, runs it.
The only acceptable outcomes are a model that works or bitnn.FormatError; anything
else (another exception, a crash, a hang, unbounded memory) is a finding.

Bases: the bundled Fashion-MNIST classifier, the bundled Shakespeare language model
(byte-level BPE tokenizer), the same without its tokenizer, and a small language model
in the exporter's layout whose tokenizer (the first 300 tokens of Shakespeare's, plus
a special token and a template) keeps tokenizer cases cheap.

Case i of a run with seed s is a pure function of (s, i): a finding is reproduced by
its numbers. Findings are kept as regression files under tests/data/header_fuzz/
(tests/test_header_fuzz.py loads every one of them).

Long run (docs/format.md, "Header fuzzing", has the figures):

    python3 tests/header_fuzz.py --files 1000000 --seed 1 --workers 2 --out /tmp/hfuzz

Each worker is a subprocess that reports the case it is on, so a crash or a hang
(no progress for --hang seconds) is pinned to one case and saved; memory is capped
per worker (--mem-gib) so that an unbounded allocation shows as a MemoryError finding.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from pathlib import Path

if __name__ == "__main__":  # run from a checkout: the tree root first on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bitnn import _core
from bitnn.errors import FormatError
from bitnn.format import Bits, encode_tensors, pack_file, read_preamble

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "bitnn" / "models"
REGRESSION_DIR = Path(__file__).resolve().parent / "data" / "header_fuzz"

# Numbers that break ranges, integer checks and float32/size_t conversions, around
# the limits docs/format.md states.
EXTREMES = [0, -1, 1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 255, 256, 4096, 65535, 65536, 65537,
            2**20, 2**24, 2**24 + 1, 2**30, 2**31 - 1, 2**31, 2**32, 2**40, 2**53 + 1, 2**62,
            2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**30, -2**31, -2**63, 0.5, 1.5, 2.0, -0.0,
            1e-5, 1e-30, 1e-45, 1e-46, 1e-320, 0.999999999, 1.0, 3.4e38, 3.5e38, 1e308, -1e308]
STRINGS = ["", "x", "linear", "relu", "gelu", "softmax", "c", "chw", "conv2d", "maxpool2d",
           "global_avg_pool", "linear ", "lm", "classifier", "bits", "f32", "byte_bpe",
           "wordpiece", "[UNK]", "\u0120", "\u00ff", "\U0001F600", "a" * 300, "layers.0.weight",
           "output.weight", "embed.token.weight", "head.0.bias"]


# ------------------------------------------------------------------ the bases
def _split(raw: bytes):
    """(header dict, data region bytes) of a valid file."""
    p = read_preamble(raw)
    header = json.loads(raw[48:48 + p.header_len])
    return header, raw[p.data_offset:]


def _small_lm(shakespeare_header):
    """A small LM in the exporter's layout (same keys and tensor names) with a 300-token
    byte-level tokenizer cut from Shakespeare's, a special token and a template."""
    rng = np.random.default_rng(0)
    tok = shakespeare_header["tokenizer"]
    n_merges = 43
    vocab = tok["vocab"][:256 + n_merges] + ["<|endoftext|>"]
    spec = {"type": "byte_bpe", "vocab": vocab, "merges": tok["merges"][:n_merges],
            "add_prefix_space": False, "use_regex": True,
            "added_tokens": [{"id": len(vocab) - 1, "special": True}],
            "template": {"prefix": [len(vocab) - 1], "suffix": []}}
    V, L, D, H, NB, FF, MLP = len(vocab) + 4, 16, 16, 2, 1, 32, [24]

    def bits(*shape):
        return Bits.from_array(rng.integers(0, 2, size=shape, dtype=np.uint8))

    tensors = {"embed.token.weight": bits(V, D), "embed.token.bias": bits(D),
               "embed.position.weight": bits(L, D), "embed.position.bias": bits(D)}
    for i in range(NB):
        for nm in ("q", "k", "v", "out"):
            tensors[f"blocks.{i}.attn.{nm}.weight"] = bits(D, D)
            tensors[f"blocks.{i}.attn.{nm}.bias"] = bits(D)
        tensors[f"blocks.{i}.ff1.weight"], tensors[f"blocks.{i}.ff1.bias"] = bits(FF, D), bits(FF)
        tensors[f"blocks.{i}.ff2.weight"], tensors[f"blocks.{i}.ff2.bias"] = bits(D, FF), bits(D)
    tensors["head.0.weight"], tensors["head.0.bias"] = bits(MLP[0], D), bits(MLP[0])
    tensors["output.weight"], tensors["output.bias"] = bits(V, MLP[0]), bits(V)
    entries, data = encode_tensors(tensors)
    header = {"model": {"kind": "lm", "name": "small"}, "eps": 1e-5,
              "lm": {"vocab_size": V, "max_len": L, "emb_dim": D, "num_heads": H,
                     "num_blocks": NB, "ff_dim": FF, "mlp_units": MLP},
              "tokenizer": spec, "tensors": entries}
    return header, data


def bases():
    """name -> (header dict, data bytes, weight): the files cases start from."""
    fashion = _split((MODELS / "fashion.bnb").read_bytes())
    shakespeare = _split((MODELS / "shakespeare.bnb").read_bytes())
    no_tok = ({k: v for k, v in shakespeare[0].items() if k != "tokenizer"}, shakespeare[1])
    return {"fashion": (*fashion, 4), "shakespeare": (*shakespeare, 1),
            "shakespeare-no-tokenizer": (*no_tok, 2), "small-lm": (*_small_lm(shakespeare[0]), 3)}


# ------------------------------------------------------------------ mutations
def _random_value(rng: random.Random, depth=0):
    r = rng.random()
    if r < 0.35:
        return rng.choice(EXTREMES)
    if r < 0.55:
        return rng.choice(STRINGS)
    if r < 0.65:
        return rng.choice([None, True, False])
    if r < 0.8 or depth > 1:
        return [] if rng.random() < 0.5 else [rng.choice(EXTREMES)]
    return {} if rng.random() < 0.5 else {"type": rng.choice(STRINGS)}


def _pick_path(rng: random.Random, tree, weights=None):
    """A path to a node: descend from the root, stopping at each level with some chance."""
    path, node = [], tree
    while isinstance(node, (dict, list)) and node:
        if path and rng.random() < 0.3:
            break
        if isinstance(node, dict):
            keys = list(node)
            if not path and weights:
                key = rng.choices(keys, [weights.get(k, 1.0) for k in keys])[0]
            else:
                key = rng.choice(keys)
        else:
            key = rng.randrange(len(node))
        path.append(key)
        node = node[key]
    return path


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, fn):
    """A copy of tree with the node at path replaced by fn(node); only the containers
    along the path are copied (the rest is shared). fn may return _DELETE."""
    if not path:
        return fn(tree)
    head, rest = path[0], path[1:]
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    new = _set(tree[head], rest, fn)
    if new is _DELETE:
        del copy[head]
    else:
        copy[head] = new
    return copy


_DELETE = object()


def _tensor_names(tree):
    t = tree.get("tensors") if isinstance(tree, dict) else None
    return list(t) if isinstance(t, dict) and t else ["x"]


def mutate(rng: random.Random, tree):
    """One semantic change; returns (new tree, description)."""
    weights = {"model": 0.5, "eps": 0.5, "tensors": 0.3, "training": 0.1, "layers": 2,
               "input": 2, "labels": 1.5, "lm": 2, "tokenizer": 2}
    path = _pick_path(rng, tree, weights)
    if not path:
        return tree, "none"
    node = _get(tree, path)
    parent_path, key = path[:-1], path[-1]
    parent = _get(tree, parent_path)
    op = rng.choice(["delete", "delete", "type", "number", "number", "offbyone", "offbyone",
                     "duplicate", "swap", "rename", "tensorref", "string", "copy", "insert"])
    where = ".".join(map(str, path))
    if op == "delete":
        return _set(tree, path, lambda v: _DELETE), f"delete {where}"
    if op == "type":
        return _set(tree, path, lambda v: _random_value(rng)), f"retype {where}"
    if op == "number":
        x = rng.choice(EXTREMES)
        return _set(tree, path, lambda v: x), f"{where} = {x!r}"
    if op == "offbyone":
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            return _set(tree, path, lambda v: _random_value(rng)), f"retype {where}"
        d = rng.choice([-1, 1, -2, 2, 64, -64])
        new = node * 2 if rng.random() < 0.2 else node + d
        return _set(tree, path, lambda v: new), f"{where} = {new!r}"
    if op == "string":
        s = rng.choice(STRINGS)
        return _set(tree, path, lambda v: s), f"{where} = {s[:20]!r}"
    if op == "tensorref":
        s = rng.choice(_tensor_names(tree))
        return _set(tree, path, lambda v: s), f"{where} = tensor {s!r}"
    if op in ("duplicate", "swap", "insert") and isinstance(parent, list):
        i = key
        if op == "duplicate":
            dup = _set(tree, parent_path, lambda v: v[:i + 1] + [v[i]] + v[i + 1:])
            return dup, f"duplicate {where}"
        if op == "insert":
            x = _random_value(rng)
            return _set(tree, parent_path, lambda v: v[:i] + [x] + v[i:]), f"insert before {where}"
        j = rng.randrange(len(parent))

        def swap(v):
            v = list(v)
            v[i], v[j] = v[j], v[i]
            return v
        return _set(tree, parent_path, swap), f"swap {where} with [{j}]"
    if op in ("rename", "insert") and isinstance(parent, dict):
        if op == "insert":
            k2 = rng.choice(["extra", "type", "activation", "norm", "bias", "size", "x"])
            x = _random_value(rng)
            return _set(tree, parent_path, lambda v: {**v, k2: x}), f"add {k2} to {parent_path}"
        new_key = rng.choice(["extra", str(key).upper(), str(key) + "s", "type", "name"])

        def rename(v):
            v = dict(v)
            v[new_key] = v.pop(key)
            return v
        return _set(tree, parent_path, rename), f"rename {where} -> {new_key}"
    if op == "copy":
        other = _get(tree, _pick_path(rng, tree, weights))
        return _set(tree, path, lambda v: other), f"copy into {where}"
    return _set(tree, path, lambda v: _DELETE), f"delete {where}"


def make_case(base, seed: int, index: int):
    """(name of the base, file bytes, what was changed) of case `index` of run `seed`."""
    rng = random.Random(f"{seed}:{index}")
    names = list(base)
    name = rng.choices(names, [base[n][2] for n in names])[0]
    tree, data, _ = base[name]
    what = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        tree, desc = mutate(rng, tree)
        what.append(desc)
    text = json.dumps(tree, ensure_ascii=rng.random() < 0.5).encode("utf-8")
    return name, pack_file(text, data), "; ".join(what)


# ------------------------------------------------------------------ running one file
def run_file(raw: bytes, messages=None):
    """Load raw file bytes and, if they load, use the model. Returns "ok" or "format";
    raises anything else (a finding). messages: a Counter of FormatError messages with
    the numbers and names taken out (which rules the cases hit)."""
    from bitnn.model import _from_file

    try:
        f = _core.BnbFile.from_bytes(raw)
        try:
            model = _from_file(f, threads=1)
        except BaseException:
            f.close()
            raise
    except FormatError as e:
        if messages is not None:
            messages[re.sub(r"\d+|'[^']*'|\"[^\"]*\"", "#", str(e))[:48]] += 1
        return "format"
    try:
        exercise(model)
    finally:
        model.close()
    return "ok"


def exercise(model):
    """Use a model that loaded the way a user would; a problem raises AssertionError."""
    if model.kind == "classifier":
        C, H, W = model.input_shape
        if C * H * W > 1 << 16:  # valid but too big to run in a fuzz loop
            return
        x = (np.arange(C * H * W, dtype=np.uint32) * 2654435761 % 251).astype(np.uint8)
        probs = model.predict(x.reshape(1, C, H, W), layout="NCHW")
        assert probs.shape == (1, len(model.labels)) and np.isfinite(probs).all()
        top = model.classify(x.reshape(1, C, H, W), top_k=2, layout="NCHW")
        assert len(top[0]) == min(2, len(model.labels))
        model.summary()
        return
    tok = model.tokenizer
    if tok is not None:
        spec = tok.spec
        # byte-level BPE without a prefix space or lowercasing is lossless, and never
        # needs more tokens than bytes
        exact = tok.kind == "byte_bpe" and not spec.get("add_prefix_space") \
            and not spec.get("lowercase")
        for text in ("x", "To be, or not", "\u00e9\U0001F600\n"):
            ids = tok.encode(text)
            assert all(0 <= i < model.vocab_size for i in ids)
            back = tok.decode(ids)
            if exact:
                assert back == text and len(ids) <= len(text.encode("utf-8")), (text, ids)
        out = model.generate("x", 2, temperature=0, seed=0)
        assert isinstance(out, str)
    ids = model.generate([0, 1], 2, temperature=0.7, seed=1)
    assert len(ids) == 2 and all(0 <= i < model.vocab_size for i in ids)
    probs = model.predict([[1, 0]])
    assert probs.shape == (1, model.vocab_size) and np.isfinite(probs).all()
    model.summary()


# ------------------------------------------------------------------ regression files
def save_finding(raw: bytes, info: dict, directory=REGRESSION_DIR) -> Path:
    """Keep a failing file as tests/data/header_fuzz/<sha>.bnb.gz plus a .json note."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(raw).hexdigest()[:16]
    path = directory / f"{sha}.bnb.gz"
    path.write_bytes(gzip.compress(raw, mtime=0))
    (directory / f"{sha}.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return path


def regression_files(directory=REGRESSION_DIR):
    return sorted(Path(directory).glob("*.bnb.gz"))


# ------------------------------------------------------------------ long runs
def _worker(seed, start, stop, mem_gib):
    """Run cases [start, stop); print "i" before each case and "stats <json>" at the end."""
    import resource

    if mem_gib:
        lim = int(mem_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    base = bases()
    stats = {"ok": 0, "format": 0, "findings": []}
    out = sys.stdout
    for i in range(start, stop):
        out.write(f"{i}\n")
        out.flush()
        name, raw, what = make_case(base, seed, i)
        try:
            stats[run_file(raw)] += 1
        except BaseException as e:  # a finding
            if isinstance(e, KeyboardInterrupt):
                raise
            info = {"seed": seed, "case": i, "base": name, "mutation": what,
                    "error": f"{type(e).__name__}: {e}"[:500]}
            save_finding(raw, info, os.environ["HFUZZ_OUT"])
            stats["findings"].append(info)
    out.write("stats " + json.dumps(stats) + "\n")
    out.flush()


def _run_chunk(seed, start, stop, args):
    """Run a chunk in a subprocess; a crash or hang becomes a finding and the chunk goes
    on after the case. Returns the stats."""
    import subprocess

    total = {"ok": 0, "format": 0, "findings": []}
    env = dict(os.environ, HFUZZ_OUT=str(args.out))
    while start < stop:
        cmd = [sys.executable, __file__, "--worker", str(seed), str(start), str(stop),
               str(args.mem_gib)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        state = {"last": start, "stats": None, "seen": time.monotonic()}

        def read(state=state, out=p.stdout):
            for line in out:
                state["seen"] = time.monotonic()
                if line.startswith("stats "):
                    state["stats"] = json.loads(line[6:])
                elif line.strip():
                    state["last"] = int(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while p.poll() is None and time.monotonic() - state["seen"] < args.hang:
            time.sleep(0.2)
        if p.poll() is None:  # no progress: a hang
            p.kill()
        p.wait()
        reader.join()
        last, stats = state["last"], state["stats"]
        if stats is not None:
            for k in ("ok", "format"):
                total[k] += stats[k]
            total["findings"] += stats["findings"]
            break
        # crashed or hung on case `last`: keep it, and go on after it
        name, raw, what = make_case(bases_cache(), seed, last)
        info = {"seed": seed, "case": last, "base": name, "mutation": what,
                "error": f"worker died (exit {p.returncode})" if p.returncode else "hang"}
        save_finding(raw, info, args.out)
        total["findings"].append(info)
        start = last + 1
    return total


_BASES = None


def bases_cache():
    global _BASES
    if _BASES is None:
        _BASES = bases()
    return _BASES


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--worker":
        _worker(int(argv[1]), int(argv[2]), int(argv[3]), float(argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--hang", type=float, default=60.0, help="seconds without progress = hang")
    ap.add_argument("--mem-gib", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=REGRESSION_DIR, help="where findings go")
    ap.add_argument("--log", type=Path, help="append a JSON progress line per chunk")
    args = ap.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.time()
    chunks = [(s, min(s + args.chunk, args.start + args.files))
              for s in range(args.start, args.start + args.files, args.chunk)]
    done = {"ok": 0, "format": 0, "findings": 0, "cases": 0}
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_run_chunk, args.seed, a, b, args) for a, b in chunks]
        for (a, b), fut in zip(chunks, futures):
            r = fut.result()
            done["ok"] += r["ok"]
            done["format"] += r["format"]
            done["findings"] += len(r["findings"])
            done["cases"] += b - a
            line = dict(done, seed=args.seed, upto=b, seconds=round(time.time() - t0, 1))
            print(json.dumps(line), flush=True)
            if args.log:
                with open(args.log, "a") as f:
                    f.write(json.dumps(line) + "\n")
    return 1 if done["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
