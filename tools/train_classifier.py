#!/usr/bin/env python3
"""Train a binary normalized CNN (docs/maths.md, The image classifier) on Fashion-MNIST.

    python3 tools/train_classifier.py --epochs 8 --checkpoint-dir /tmp/fm_bin \\
        --metrics fm_binary.json --out fashion.bnb
    python3 tools/train_classifier.py --fp32 --epochs 8 --metrics fm_fp32.json

Preprocessing (recorded in the metrics and the exported model): pixels
uint8 / 255, then (x - mean) / std with the train-set mean and std.
Loss: cross-entropy of log_softmax(Normalize(z)) of the final layer, i.e. the
categorical cross-entropy of the model's softmax output.
LR schedule: linear warmup from 0 to --lr over --warmup-steps optimiser steps,
then cosine decay to --lr * --min-lr-frac at the last step.

Checkpoints: <checkpoint-dir>/last.pt after every epoch; --resume continues
from it (same flags required). The final weights are written to --state-dict
(default <checkpoint-dir>/model.pt) as a dict {"config", "state_dict",
"preprocess", "labels"}; rebuild with BinaryCNN(**d["config"]).
--export-from PATH exports such a file to --out without training.
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
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fashion_mnist  # noqa: E402
from common import Progress, atomic_save, int_list, lr_factor  # noqa: E402
from bitnn.nn import BinaryCNN  # noqa: E402



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--channels", type=int_list, default=[16, 32, 32, 64, 128],
                   help="conv widths, one block (two convs) each; 2x2 max-pool between blocks")
    g.add_argument("--fc-units", type=int_list, default=[128, 128],
                   help="hidden fully connected widths (may be empty: '')")
    g.add_argument("--kernel-size", type=int, default=3)
    g.add_argument("--norm", choices=["chw", "c"], default="c",
                   help="conv Normalize axes: C at each position, or (C,H,W) per example "
                        "(binary 'chw' trains far worse: with 0/1 weights on relu inputs "
                        "every channel sees the same local energy)")
    g.add_argument("--eps", type=float, default=1e-5)
    g.add_argument("--fp32", action="store_true",
                   help="train the fp32 baseline of the same shape (not exportable)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam)")
    g.add_argument("--warmup-steps", type=int, default=200)
    g.add_argument("--min-lr-frac", type=float, default=0.0,
                   help="final lr as a fraction of --lr")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (None: torch's choice)")
    g.add_argument("--limit-train", type=int, default=0,
                   help="use only the first N training examples (0 = all; for quick tests)")
    g.add_argument("--train-eval-size", type=int, default=10000,
                   help="evaluate train loss/accuracy (eval mode) on the first N training "
                        "examples; 0 = the whole training set (costs ~40%% more time)")
    g.add_argument("--eval-batch-size", type=int, default=256)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("files")
    g.add_argument("--data-dir", default=None,
                   help=f"Fashion-MNIST directory (None: $FASHION_MNIST_DIR or "
                        f"{fashion_mnist.DEFAULT_DIR})")
    g.add_argument("--checkpoint-dir", default=None, help="write last.pt here after each epoch")
    g.add_argument("--resume", action="store_true", help="continue from <checkpoint-dir>/last.pt")
    g.add_argument("--metrics", default=None, help="write the metrics JSON here")
    g.add_argument("--state-dict", default=None,
                   help="final weights file (default <checkpoint-dir>/model.pt if a "
                        "checkpoint dir is given)")
    g.add_argument("--out", default=None, help="export the trained binary model (.bnb)")
    g.add_argument("--export-from", default=None,
                   help="skip training: export this --state-dict file to --out")
    args = p.parse_args(argv)
    if args.resume and not args.checkpoint_dir:
        p.error("--resume needs --checkpoint-dir")
    if args.out and args.fp32:
        p.error("--out exports binary models only; drop --fp32")
    if args.export_from and not args.out:
        p.error("--export-from needs --out")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


# --------------------------------------------------------------------------

def preprocess_arrays(x_train: np.ndarray, x_test: np.ndarray):
    """uint8 -> float32 (x/255 - mean) / std, NCHW; mean/std from the train set."""
    scaled = x_train.astype(np.float64) / 255.0
    mean, std = float(scaled.mean()), float(scaled.std())

    def conv(x):
        t = torch.from_numpy(x).to(torch.float32).div_(255.0)
        return t.sub_(mean).div_(std).unsqueeze(1).contiguous()

    pre = {"scale": 1.0 / 255.0, "mean": [mean], "std": [std]}
    return conv(x_train), conv(x_test), pre


@torch.no_grad()
def evaluate(model, x, y, batch_size):
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model.logits(x[i:i + batch_size])
        yb = y[i:i + batch_size]
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(-1) == yb).sum().item()
    return total_loss / len(x), correct / len(x)


def build_model(args) -> BinaryCNN:
    return BinaryCNN(in_channels=1, num_classes=len(fashion_mnist.CLASS_NAMES),
                     channels=args.channels, kernel_size=args.kernel_size,
                     fc_units=args.fc_units, norm=args.norm, binary=not args.fp32,
                     eps=args.eps)


def export(model, path, preprocess, training=None, name="fashion"):
    import bitnn

    bitnn.export(model, path, input_shape=(1, 28, 28), labels=list(fashion_mnist.CLASS_NAMES),
                 preprocess={"scale": preprocess["scale"], "mean": preprocess["mean"],
                             "std": preprocess["std"]},
                 name=name, training=training)
    print(f"exported {path} ({os.path.getsize(path)} bytes)")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.export_from:
        d = torch.load(args.export_from, map_location="cpu", weights_only=False)
        model = BinaryCNN(**d["config"])
        model.load_state_dict(d["state_dict"])
        model.eval()
        export(model, args.out, d["preprocess"], d.get("training"))
        return 0

    try:
        (x_train, y_train), (x_test, y_test) = fashion_mnist.load(args.data_dir)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    if args.limit_train:
        x_train, y_train = x_train[:args.limit_train], y_train[:args.limit_train]
    x_train, x_test, preprocess = preprocess_arrays(x_train, x_test)
    y_train = torch.from_numpy(y_train.astype(np.int64))
    y_test = torch.from_numpy(y_test.astype(np.int64))
    n_eval = args.train_eval_size or len(x_train)
    x_train_eval, y_train_eval = x_train[:n_eval], y_train[:n_eval]

    torch.manual_seed(args.seed)
    model = build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, args.warmup_steps, total_steps, args.min_lr_frac))

    history, start_epoch, elapsed_before = [], 0, 0.0
    ckpt_path = os.path.join(args.checkpoint_dir, "last.pt") if args.checkpoint_dir else None
    if args.checkpoint_dir:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["config"] != model.config:
            print(f"checkpoint config {ck['config']} differs from {model.config}", file=sys.stderr)
            return 2
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history, start_epoch = ck["history"], ck["epoch"]
        elapsed_before = ck.get("wall_time_s", 0.0)
        print(f"resumed from {ckpt_path} after epoch {start_epoch}")
    elif args.resume:
        print(f"no checkpoint at {ckpt_path}; starting from scratch")

    kind = "fp32" if args.fp32 else "binary"
    print(f"{kind} BinaryCNN {model.config}: {n_params:,} parameters; "
          f"{len(x_train)} train / {len(x_test)} test; {steps_per_epoch} steps/epoch; "
          f"threads {torch.get_num_threads()}", flush=True)
    preprocess_log = {**preprocess, "layout": "NCHW float32, x = (uint8 * scale - mean) / std"}

    t_start = time.time()
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        model.train()
        # A per-epoch generator makes the shuffle independent of resuming.
        perm = torch.randperm(len(x_train),
                              generator=torch.Generator().manual_seed(args.seed * 100003 + epoch))
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{args.epochs}", not args.no_progress)
        run_loss, run_correct, seen = 0.0, 0, 0
        for i in range(0, len(x_train), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = model.logits(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * len(idx)
            run_correct += (logits.argmax(-1) == yb).sum().item()
            seen += len(idx)
            bar.update(loss=(run_loss / seen, ".4f"), acc=(run_correct / seen, ".3f"))
        bar.close()
        t_train = time.time() - t0
        tr_loss, tr_acc = evaluate(model, x_train_eval, y_train_eval, args.eval_batch_size)
        te_loss, te_acc = evaluate(model, x_test, y_test, args.eval_batch_size)
        rec = {"epoch": epoch + 1, "lr_end": sched.get_last_lr()[0],
               "running_train_loss": run_loss / seen, "running_train_acc": run_correct / seen,
               "train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss,
               "test_acc": te_acc, "train_time_s": t_train, "epoch_time_s": time.time() - t0}
        history.append(rec)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {tr_loss:.4f} acc {tr_acc:.4f} | "
              f"test loss {te_loss:.4f} acc {te_acc:.4f} | {t_train:.0f}s train, "
              f"{rec['epoch_time_s']:.0f}s total", flush=True)
        if ckpt_path:
            atomic_save({"epoch": epoch + 1, "config": model.config, "model": model.state_dict(),
                          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "history": history, "preprocess": preprocess, "args": vars(args),
                          "wall_time_s": elapsed_before + time.time() - t_start}, ckpt_path)
    wall = elapsed_before + time.time() - t_start
    model.eval()

    if history:
        best_acc = max(history, key=lambda r: r["test_acc"])
        best_loss = min(history, key=lambda r: r["test_loss"])
        summary = {
            "best": {"test_acc": best_acc["test_acc"], "test_acc_epoch": best_acc["epoch"],
                     "test_loss": best_loss["test_loss"], "test_loss_epoch": best_loss["epoch"],
                     "train_acc": max(r["train_acc"] for r in history),
                     "train_loss": min(r["train_loss"] for r in history)},
            "final": {k: history[-1][k] for k in ("train_loss", "train_acc", "test_loss",
                                                   "test_acc")},
        }
        print(f"best test acc {summary['best']['test_acc']:.4f} (epoch "
              f"{summary['best']['test_acc_epoch']}), final {summary['final']['test_acc']:.4f}; "
              f"wall {wall:.0f}s")
    else:
        summary = {"best": None, "final": None}

    command = shlex.join([sys.executable] + sys.argv) if argv is None \
        else shlex.join(["train_classifier.py"] + list(argv))
    # Provenance kept in the state-dict file and in the exported .bnb.
    training = {"dataset": "fashion-mnist", "command": command, "seed": args.seed,
                "epochs": len(history), "batch_size": args.batch_size, "lr": args.lr,
                "warmup_steps": args.warmup_steps, "optimizer": "Adam",
                "final": summary["final"], "best": summary["best"], "torch": torch.__version__}

    state_path = args.state_dict or (os.path.join(args.checkpoint_dir, "model.pt")
                                     if args.checkpoint_dir else None)
    if state_path:
        atomic_save({"config": model.config, "state_dict": model.state_dict(),
                      "preprocess": preprocess, "labels": list(fashion_mnist.CLASS_NAMES),
                      "training": training}, state_path)
        print(f"wrote {state_path}")

    if args.metrics:
        metrics = {
            "command": command, "args": vars(args), "seed": args.seed, "model": kind,
            "config": model.config, "parameters": n_params,
            "dataset": {"name": "fashion-mnist", "dir": fashion_mnist.dataset_dir(args.data_dir),
                        "train": len(x_train), "test": len(x_test), "train_eval": n_eval},
            "preprocess": preprocess_log, "labels": list(fashion_mnist.CLASS_NAMES),
            "optimizer": {"name": "Adam", "lr": args.lr, "warmup_steps": args.warmup_steps,
                          "schedule": "linear warmup, cosine decay",
                          "min_lr_frac": args.min_lr_frac, "batch_size": args.batch_size,
                          "total_steps": total_steps},
            "loss": "cross-entropy of log_softmax(Normalize(z)) of the final layer",
            "history": history, **summary, "wall_time_s": wall,
            "seconds_per_epoch": (sum(r["epoch_time_s"] for r in history) / len(history)
                                  if history else None),
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "machine": platform.machine(),
                            "cpus": os.cpu_count()},
            "state_dict": state_path, "export": args.out,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.metrics)), exist_ok=True)
        with open(args.metrics, "w") as f:
            json.dump(metrics, f, indent=2)
        print(f"wrote {args.metrics}")

    if args.out:
        export(model, args.out, preprocess, training)
    return 0


if __name__ == "__main__":
    sys.exit(main())
