#!/usr/bin/env python3
"""Classify every image in a folder on all CPUs with concurrent.futures.

    python3 examples/classify_folder.py FOLDER [--model fashion] [--workers 4]

Prints one CSV line per image: path,label,probability. Each worker process
opens the model once (the pool's initializer); the images go to the workers
in chunks. Opened with mmap (the default), every process maps the same file,
so the model's bytes sit once in the page cache however many workers there
are. examples/ray_classify.py does the same on a Ray cluster.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import bitnn
from bitnn.imageio import fit_image, read_image

IMAGE_SUFFIXES = {".png", ".pgm", ".ppm", ".jpg", ".jpeg", ".npy"}


def image_paths(folder) -> list[str]:
    """The image files directly in `folder`, sorted."""
    return sorted(str(p) for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def classify_paths(model, paths) -> list[tuple[str, str, float]]:
    """(path, best label, its probability) for image files, as one batch."""
    C, H, W = model.input_shape
    batch = np.stack([fit_image(read_image(p), C, H, W) for p in paths])
    probs = model.predict(batch, layout="NHWC")
    best = probs.argmax(axis=1)
    return [(p, model.labels[i], float(probs[k, i])) for k, (p, i) in enumerate(zip(paths, best))]


_model = None   # one per worker process


def _open(model_name, threads):
    global _model
    _model = bitnn.load(model_name, threads=threads)


def _work(paths):
    return classify_paths(_model, paths)


def classify_folder(folder, model="fashion", workers=None, chunk=64):
    """[(path, label, probability)] for the images in `folder`, computed by `workers` processes."""
    paths = image_paths(folder)
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    workers = workers or os.cpu_count() or 1
    # one compute thread per process: the processes are the parallelism
    with ProcessPoolExecutor(workers, initializer=_open, initargs=(model, 1)) as ex:
        return [row for rows in ex.map(_work, chunks) for row in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--model", default="fashion", help="a .bnb file or a bundled model name")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--chunk", type=int, default=64, help="images per task")
    args = p.parse_args(argv)
    for path, label, prob in classify_folder(args.folder, args.model, args.workers, args.chunk):
        print(f"{path},{label},{prob:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
