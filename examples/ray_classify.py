#!/usr/bin/env python3
"""Classify every image in a folder with Ray Data (the ``ray`` extra).

    pip install ".[ray]"
    python3 examples/ray_classify.py FOLDER [--model fashion] [--workers 2] [--address auto]

Prints one CSV line per image: path,label,probability. ``map_batches`` runs
the ``Classifier`` class on a pool of Ray actors: each actor opens the model
once in its constructor and classifies batch after batch. The model is opened
from its path (or bundled name) in every worker process; on one machine the
processes map the same file, so its bytes are in the page cache once. On a
cluster, every node needs the model file and the images at the same paths
(a shared filesystem), or use a bundled model name.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import ray

import bitnn
from bitnn.imageio import fit_image, read_image

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from classify_folder import image_paths  # noqa: E402


class Classifier:
    """Opens the model once per Ray worker; called with batches {"path": array of str}."""

    def __init__(self, model="fashion", threads=1):
        self.model = bitnn.load(model, threads=threads)

    def __call__(self, batch: dict) -> dict:
        C, H, W = self.model.input_shape
        paths = [str(p) for p in batch["path"]]
        images = np.stack([fit_image(read_image(p), C, H, W) for p in paths])
        probs = self.model.predict(images, layout="NHWC")
        best = probs.argmax(axis=1)
        return {"path": np.array(paths),
                "label": np.array([self.model.labels[i] for i in best]),
                "probability": probs[np.arange(len(best)), best]}


def classify_folder(folder, model="fashion", workers=2, batch_size=64):
    """[(path, label, probability)] for the images in `folder`, in path order."""
    ds = ray.data.from_items([{"path": p} for p in image_paths(folder)])
    out = ds.map_batches(Classifier, fn_constructor_kwargs={"model": model},
                         concurrency=workers, batch_size=batch_size, batch_format="numpy")
    rows = sorted(out.take_all(), key=lambda r: r["path"])
    return [(r["path"], r["label"], float(r["probability"])) for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--model", default="fashion", help="a .bnb file or a bundled model name")
    p.add_argument("--workers", type=int, default=2, help="Ray actors, each with the model open")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--address", default=None,
                   help="a running Ray cluster ('auto'); default: start Ray on this machine")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray")
    args = p.parse_args(argv)
    ray.init(address=args.address, num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        rows = classify_folder(args.folder, args.model, args.workers, args.batch_size)
    finally:
        ray.shutdown()
    for path, label, prob in rows:
        print(f"{path},{label},{prob:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
