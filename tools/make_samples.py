#!/usr/bin/env python3
"""Write the sample images that ship with the package (bitnn/models/samples/).

    python3 tools/make_samples.py

Takes the first test image of a few Fashion-MNIST classes and writes each as
an 8-bit grey PNG named after its class. Test images were never seen in
training.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import fashion_mnist  # noqa: E402
from bitnn.imageio import write_png  # noqa: E402

CLASSES = ["ankle boot", "trouser", "bag", "sneaker", "shirt"]


def main():
    out = os.path.join(os.path.dirname(HERE), "bitnn", "models", "samples")
    os.makedirs(out, exist_ok=True)
    images, labels = fashion_mnist.load_split("test")
    for name in CLASSES:
        c = [n.lower() for n in fashion_mnist.CLASS_NAMES].index(name)
        i = int((labels == c).nonzero()[0][0])
        path = os.path.join(out, name.replace(" ", "-") + ".png")
        write_png(path, images[i])
        print(f"{path}: test image {i}, label {fashion_mnist.CLASS_NAMES[c]}")


if __name__ == "__main__":
    main()
