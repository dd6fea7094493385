"""examples/: classifying a folder with concurrent.futures and with Ray Data."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bitnn
from bitnn.imageio import fit_image, read_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "bitnn" / "models" / "samples"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The five sample images, each also as PGM and as a flipped copy: 15 images."""
    d = tmp_path_factory.mktemp("images")
    for p in SAMPLES.glob("*.png"):
        shutil.copy(p, d / p.name)
        img = read_image(p)[:, :, 0]
        h, w = img.shape
        (d / (p.stem + ".pgm")).write_bytes(b"P5\n%d %d\n255\n" % (w, h) + img.tobytes())
        (d / (p.stem + "-flipped.pgm")).write_bytes(b"P5\n%d %d\n255\n" % (w, h)
                                                    + np.ascontiguousarray(img[:, ::-1]).tobytes())
    (d / "notes.txt").write_text("not an image: skipped")
    return d


def expected(folder):
    with bitnn.load("fashion") as m:
        rows = []
        for p in sorted(folder.iterdir()):
            if p.suffix != ".txt":
                label, prob = m.classify(fit_image(read_image(p), 1, 28, 28), top_k=1,
                                         layout="NHWC")[0][0]
                rows.append((str(p), label, prob))
        return rows


def run_example(name, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.rsplit(",", 2) for line in r.stdout.splitlines()]
    return [(path, label, float(prob)) for path, label, prob in rows]


def check(got, want):
    assert [(p, label) for p, label, _ in got] == [(p, label) for p, label, _ in want]
    np.testing.assert_allclose([x for *_, x in got], [x for *_, x in want], atol=2e-6)


def test_concurrent_futures_example(folder):
    check(run_example("classify_folder.py", str(folder), "--workers", "2", "--chunk", "4"),
          expected(folder))


def test_ray_data_example(folder):
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    check(run_example("ray_classify.py", str(folder), "--workers", "2", "--num-cpus", "2",
                      "--batch-size", "4", timeout=600), expected(folder))
