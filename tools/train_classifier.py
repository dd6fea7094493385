"""Train a binary normalized CNN (docs/maths.md, The image classifier) on Fashion-MNIST.

    python3 -m tools.train_classifier --epochs 8 --checkpoint-dir /tmp/fm_bin \\
        --metrics fm_binary.json --out fashion.bnb
    python3 -m tools.train_classifier --fp32 --epochs 8 --metrics fm_fp32.json

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
import math
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

try:
    from bitnn.nn import BinaryCNN
    from tools import common, fashion_mnist
except ModuleNotFoundError as e:  # run as a file, or from another directory
    sys.exit(f"{e}: run this from the repository root as python3 -m tools.train_classifier")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--channels", type=common.int_list, default=[16, 32, 32, 64, 128],
                   help="conv widths, one block (two convs) each; 2x2 max-pool between blocks")
    g.add_argument("--fc-units", type=common.int_list, default=[128, 128],
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
    common.add_output_args(g)
    args = p.parse_args(argv)
    common.check_training_args(p, args, positive=("epochs", "batch_size", "eval_batch_size"))
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


def export_saved(args) -> int:
    """--export-from: rebuild the model from a weights file and export it."""
    d = common.torch_load(args.export_from)
    model = BinaryCNN(**d["config"])
    model.load_state_dict(d["state_dict"])
    model.eval()
    export(model, args.out, d["preprocess"], d.get("training"))
    return 0


def load_data(args) -> SimpleNamespace:
    """Fashion-MNIST as preprocessed tensors, plus the train-eval subset."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load(args.data_dir)
    if args.limit_train:
        x_train, y_train = x_train[:args.limit_train], y_train[:args.limit_train]
    x_train, x_test, preprocess = preprocess_arrays(x_train, x_test)
    d = SimpleNamespace(x_train=x_train, x_test=x_test, preprocess=preprocess,
                        y_train=torch.from_numpy(y_train.astype(np.int64)),
                        y_test=torch.from_numpy(y_test.astype(np.int64)))
    d.n_eval = args.train_eval_size or len(x_train)
    d.x_train_eval, d.y_train_eval = d.x_train[:d.n_eval], d.y_train[:d.n_eval]
    return d


def setup_training(args, n_train: int) -> SimpleNamespace:
    """Model, optimizer and schedule, resumed from the checkpoint when asked.

    Raises ValueError when the checkpoint is for another model shape."""
    torch.manual_seed(args.seed)
    model = build_model(args)
    t = SimpleNamespace(model=model, history=[], start_epoch=0, elapsed_before=0.0,
                        steps_per_epoch=math.ceil(n_train / args.batch_size))
    t.total_steps = t.steps_per_epoch * args.epochs
    t.opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    t.sched = common.warmup_cosine(t.opt, args.warmup_steps, t.total_steps, args.min_lr_frac)
    t.ckpt_path = os.path.join(args.checkpoint_dir, "last.pt") if args.checkpoint_dir else None
    if args.checkpoint_dir:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
    if args.resume and os.path.exists(t.ckpt_path):
        ck = common.torch_load(t.ckpt_path)
        if ck["config"] != model.config:
            raise ValueError(f"checkpoint config {ck['config']} differs from {model.config}")
        common.restore(ck, model, t.opt, t.sched)
        t.history, t.start_epoch = ck["history"], ck["epoch"]
        t.elapsed_before = ck.get("wall_time_s", 0.0)
        print(f"resumed from {t.ckpt_path} after epoch {t.start_epoch}")
    elif args.resume:
        print(f"no checkpoint at {t.ckpt_path}; starting from scratch")
    return t


def train_epoch(args, t, data, epoch: int) -> dict:
    """One pass over the shuffled training set; the running loss and accuracy."""
    t.model.train()
    # A per-epoch generator makes the shuffle independent of resuming.
    perm = torch.randperm(len(data.x_train),
                          generator=torch.Generator().manual_seed(args.seed * 100003 + epoch))
    bar = common.Progress(t.steps_per_epoch, f"epoch {epoch + 1}/{args.epochs}",
                          not args.no_progress)
    run_loss, run_correct, seen = 0.0, 0, 0
    for i in range(0, len(data.x_train), args.batch_size):
        idx = perm[i:i + args.batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]
        logits = t.model.logits(xb)
        loss = F.cross_entropy(logits, yb)
        t.opt.zero_grad(set_to_none=True)
        loss.backward()
        t.opt.step()
        t.sched.step()
        run_loss += loss.item() * len(idx)
        run_correct += (logits.argmax(-1) == yb).sum().item()
        seen += len(idx)
        bar.update(loss=(run_loss / seen, ".4f"), acc=(run_correct / seen, ".3f"))
    bar.close()
    return {"running_train_loss": run_loss / seen, "running_train_acc": run_correct / seen}


def train(args, t, data, t_start: float) -> None:
    """The remaining epochs: train, evaluate, record, checkpoint."""
    for epoch in range(t.start_epoch, args.epochs):
        t0 = time.time()
        running = train_epoch(args, t, data, epoch)
        t_train = time.time() - t0
        tr_loss, tr_acc = evaluate(t.model, data.x_train_eval, data.y_train_eval,
                                   args.eval_batch_size)
        te_loss, te_acc = evaluate(t.model, data.x_test, data.y_test, args.eval_batch_size)
        rec = {"epoch": epoch + 1, "lr_end": t.sched.get_last_lr()[0], **running,
               "train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss,
               "test_acc": te_acc, "train_time_s": t_train, "epoch_time_s": time.time() - t0}
        t.history.append(rec)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {tr_loss:.4f} acc {tr_acc:.4f} | "
              f"test loss {te_loss:.4f} acc {te_acc:.4f} | {t_train:.0f}s train, "
              f"{rec['epoch_time_s']:.0f}s total", flush=True)
        if t.ckpt_path:
            common.atomic_save({"epoch": epoch + 1, "config": t.model.config,
                                "model": t.model.state_dict(), "optimizer": t.opt.state_dict(),
                                "scheduler": t.sched.state_dict(), "history": t.history,
                                "preprocess": data.preprocess, "args": vars(args),
                                "wall_time_s": t.elapsed_before + time.time() - t_start},
                               t.ckpt_path)


def summarize(history: list) -> dict:
    """The best and the final figures of the run (None before any epoch)."""
    if not history:
        return {"best": None, "final": None}
    best_acc = max(history, key=lambda r: r["test_acc"])
    best_loss = min(history, key=lambda r: r["test_loss"])
    return {
        "best": {"test_acc": best_acc["test_acc"], "test_acc_epoch": best_acc["epoch"],
                 "test_loss": best_loss["test_loss"], "test_loss_epoch": best_loss["epoch"],
                 "train_acc": max(r["train_acc"] for r in history),
                 "train_loss": min(r["train_loss"] for r in history)},
        "final": {k: history[-1][k] for k in ("train_loss", "train_acc", "test_loss",
                                               "test_acc")},
    }


def metrics_record(args, t, data, summary, command, wall, state_path) -> dict:
    """Everything about the run for the --metrics file."""
    history = t.history
    return {
        "command": command, "args": vars(args), "seed": args.seed,
        "model": "fp32" if args.fp32 else "binary", "config": t.model.config,
        "parameters": sum(p.numel() for p in t.model.parameters()),
        "dataset": {"name": "fashion-mnist", "dir": fashion_mnist.dataset_dir(args.data_dir),
                    "train": len(data.x_train), "test": len(data.x_test),
                    "train_eval": data.n_eval},
        "preprocess": {**data.preprocess,
                       "layout": "NCHW float32, x = (uint8 * scale - mean) / std"},
        "labels": list(fashion_mnist.CLASS_NAMES),
        "optimizer": {"name": "Adam", "lr": args.lr, "warmup_steps": args.warmup_steps,
                      "schedule": "linear warmup, cosine decay",
                      "min_lr_frac": args.min_lr_frac, "batch_size": args.batch_size,
                      "total_steps": t.total_steps},
        "loss": "cross-entropy of log_softmax(Normalize(z)) of the final layer",
        "history": history, **summary, "wall_time_s": wall,
        "seconds_per_epoch": (sum(r["epoch_time_s"] for r in history) / len(history)
                              if history else None),
        "environment": common.environment(threads=torch.get_num_threads()),
        "state_dict": state_path, "export": args.out,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export_from:
        return export_saved(args)
    try:
        data = load_data(args)
        t = setup_training(args, len(data.x_train))
    except (FileNotFoundError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    n_params = sum(p.numel() for p in t.model.parameters())
    print(f"{'fp32' if args.fp32 else 'binary'} BinaryCNN {t.model.config}: {n_params:,} "
          f"parameters; {len(data.x_train)} train / {len(data.x_test)} test; "
          f"{t.steps_per_epoch} steps/epoch; threads {torch.get_num_threads()}", flush=True)

    t_start = time.time()
    train(args, t, data, t_start)
    wall = t.elapsed_before + time.time() - t_start
    t.model.eval()
    summary = summarize(t.history)
    if summary["best"]:
        print(f"best test acc {summary['best']['test_acc']:.4f} (epoch "
              f"{summary['best']['test_acc_epoch']}), final {summary['final']['test_acc']:.4f}; "
              f"wall {wall:.0f}s")

    command = common.command_line("tools.train_classifier", argv)
    # Provenance kept in the state-dict file and in the exported .bnb.
    training = {"dataset": "fashion-mnist", "command": command, "seed": args.seed,
                "epochs": len(t.history), "batch_size": args.batch_size, "lr": args.lr,
                "warmup_steps": args.warmup_steps, "optimizer": "Adam",
                "final": summary["final"], "best": summary["best"], "torch": torch.__version__}
    state_path = common.state_dict_path(args)
    if state_path:
        common.atomic_save({"config": t.model.config, "state_dict": t.model.state_dict(),
                            "preprocess": data.preprocess,
                            "labels": list(fashion_mnist.CLASS_NAMES), "training": training},
                           state_path)
        print(f"wrote {state_path}")
    if args.metrics:
        record = metrics_record(args, t, data, summary, command, wall, state_path)
        common.write_json(args.metrics, record)
    if args.out:
        export(t.model, args.out, data.preprocess, training)
    return 0


if __name__ == "__main__":
    sys.exit(main())
