"""Write the sample images that ship with the package (bitnn/models/samples/).

    python3 -m tools.make_samples

Takes the first test image of a few Fashion-MNIST classes and writes each as
an 8-bit grey PNG named after its class. Test images were never seen in
training.
"""
import os
import sys

try:
    from bitnn.imageio import write_png
    from tools import fashion_mnist
except ModuleNotFoundError as e:  # run as a file, or from another directory
    sys.exit(f"{e}: run this from the repository root as python3 -m tools.make_samples")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLASSES = ["ankle boot", "trouser", "bag", "sneaker", "shirt"]


def main():
    out = os.path.join(ROOT, "bitnn", "models", "samples")
    os.makedirs(out, exist_ok=True)
    try:
        images, labels = fashion_mnist.load_split("test")
    except FileNotFoundError as e:
        sys.exit(str(e))
    for name in CLASSES:
        c = [n.lower() for n in fashion_mnist.CLASS_NAMES].index(name)
        i = int((labels == c).nonzero()[0][0])
        path = os.path.join(out, name.replace(" ", "-") + ".png")
        write_png(path, images[i])
        print(f"{path}: test image {i}, label {fashion_mnist.CLASS_NAMES[c]}")


if __name__ == "__main__":
    main()
