"""Models across processes: fork (os.fork, multiprocessing "fork"), spawn and pickling.

Every scenario runs in its own interpreter under a timeout, so a child that
hangs (a thread pool whose workers did not survive fork) fails the test
instead of blocking the suite.
"""
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import bitnn

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # generous: CI also runs this under ASan

# Run as a script: python script.py MODE MODEL. Loads MODEL with a 2-thread
# pool, computes once in the parent, then compares a child's result (and the
# parent's afterwards) with it. Exit status 0 = all equal.
SCRIPT = textwrap.dedent('''
    import multiprocessing as mp, os, sys, threading
    import numpy as np
    import bitnn

    def work(model):
        if model.kind == "classifier":
            x = np.random.default_rng(0).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
            return model.predict(x).tobytes()
        return model.generate("ROMEO:", 24, seed=7).encode()

    def work_inherited(_):
        return work(M)          # the parent's model, inherited through fork

    if __name__ == "__main__":
        mode, name = sys.argv[1], sys.argv[2]
        M = bitnn.load(name, threads=2)
        ref = work(M)
        if mode == "os.fork":
            pid = os.fork()
            if pid == 0:
                os._exit(0 if work(M) == ref else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
        elif mode == "os.fork-busy":
            # fork while another thread of the parent is inside the pool
            stop = threading.Event()
            def busy():
                while not stop.is_set():
                    assert work(M) == ref
            t = threading.Thread(target=busy)
            t.start()
            for _ in range(5):
                pid = os.fork()
                if pid == 0:
                    os._exit(0 if work(M) == ref else 3)
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0, status
            stop.set()
            t.join()
        elif mode == "fork":
            with mp.get_context("fork").Pool(2) as pool:
                assert pool.map(work_inherited, range(4)) == [ref] * 4
        elif mode == "spawn":
            # the model itself goes to the children: pickled as its path
            with mp.get_context("spawn").Pool(2) as pool:
                assert pool.map(work, [M] * 4) == [ref] * 4
        else:
            raise SystemExit("unknown mode " + mode)
        assert work(M) == ref      # the parent is unaffected
        print("ok")
''')


@pytest.mark.parametrize("model", ["fashion", "shakespeare"])
@pytest.mark.parametrize("mode", ["os.fork", "os.fork-busy", "fork", "spawn"])
def test_model_works_in_child_and_parent(tmp_path, mode, model):
    if mode == "os.fork-busy" and "libasan" in os.environ.get("LD_PRELOAD", ""):
        # seen with GCC 12's ASan: a parent thread inside ASan's malloc at fork
        # leaves the allocator's lock held in the child, whose first malloc hangs
        pytest.skip("ASan's allocator is not fork-safe while other threads allocate")
    script = tmp_path / "fork_scenario.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("BITNN_NUM_THREADS", None)
    # its own process group: on a hang, the forked children go too
    proc = subprocess.Popen([sys.executable, str(script), mode, model], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{mode} with {model}: hung for {TIMEOUT} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0 and out.strip() == "ok", out + err


def _classify_in_worker(model, seed):
    x = np.random.default_rng(seed).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    return os.getpid(), model.predict(x)


def _generate_in_worker(model, seed):
    return os.getpid(), model.generate("JULIET:", 16, seed=seed)


def test_pickle_records_path_not_bytes():
    with bitnn.load("fashion", threads=1, mmap=False) as m:
        data = pickle.dumps(m)
        assert len(data) < 1000 < m.file_size      # the 50 KB file is not in it
        with pickle.loads(data) as m2:
            assert m2.path == m.path and m2.threads == 1 and m2.kind == "classifier"
            assert m2._load_args == m._load_args == ("fashion", 1, False, None, "fp32")
            x = np.zeros((1, 28, 28), np.uint8)
            assert np.array_equal(m2.predict(x), m.predict(x))


def test_pickle_by_path(tmp_path):
    src = bitnn.model.bundled_models()["shakespeare"]
    copy = tmp_path / "copy.bnb"
    copy.write_bytes(src.read_bytes())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        m = bitnn.load("copy.bnb", kernel="ref")        # relative: recorded as absolute
    finally:
        os.chdir(cwd)
    with m, pickle.loads(pickle.dumps(m)) as m2:
        assert m2._load_args == (str(copy), None, True, "ref", "fp32")
        assert m2.generate("A", 8, seed=3) == m.generate("A", 8, seed=3)


def test_pickle_closed_model_fails():
    m = bitnn.load("fashion")
    m.close()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(m)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_executor(method):
    clf = bitnn.load("fashion", threads=2)
    lm = bitnn.load("shakespeare", threads=2)
    with clf, lm, ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        futs = [ex.submit(_classify_in_worker, clf, s) for s in range(4)]
        futs += [ex.submit(_generate_in_worker, lm, s) for s in range(4)]
        results = [f.result(timeout=TIMEOUT) for f in futs]
        pids = {pid for pid, _ in results}
        assert os.getpid() not in pids
        for s in range(4):
            assert np.array_equal(results[s][1], _classify_in_worker(clf, s)[1])
            assert results[4 + s][1] == _generate_in_worker(lm, s)[1]


# ------------------------------------------------------------------ threads
def test_threads_share_one_model_same_results_as_serial():
    clf = bitnn.load("fashion", threads=2)
    lm = bitnn.load("shakespeare", threads=2)
    xs = [np.random.default_rng(s).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
          for s in range(8)]
    serial_p = [clf.predict(x) for x in xs]
    serial_g = [lm.generate("ROMEO:", 20, seed=s) for s in range(8)]
    serial_ids = [lm.generate([1, 2, 3], 10, seed=s, stream=True) for s in range(8)]
    serial_ids = [list(g) for g in serial_ids]
    got_p, got_g, got_ids, errors = {}, {}, {}, []

    def worker(s):
        try:
            for _ in range(3):
                got_p[s] = clf.predict(xs[s])
                got_g[s] = lm.generate("ROMEO:", 20, seed=s)
                got_ids[s] = list(lm.generate([1, 2, 3], 10, seed=s, stream=True))
                assert np.array_equal(got_p[s], serial_p[s])
                assert got_g[s] == serial_g[s] and got_ids[s] == serial_ids[s]
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    assert len(got_p) == len(got_g) == len(got_ids) == 8
    clf.close()
    lm.close()


def _wait_for(cond, what):
    import time

    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > TIMEOUT:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_close_waits_for_a_call_in_flight():
    m = bitnn.load("fashion", threads=1)
    x = np.random.default_rng(0).integers(0, 256, (3000, 1, 28, 28), dtype=np.uint8)
    expected = m.predict(x[:4])
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("p", m.predict(x)))
    t.start()
    _wait_for(lambda: m._calls == 1 or "p" in out, "the predict call to start")
    m.close()                 # returns only when the call is done
    assert m.closed and "p" in out
    t.join(TIMEOUT)
    assert np.array_equal(out["p"][:4], expected)
    with pytest.raises(ValueError, match="closed"):
        m.predict(x[:1])


def test_close_stops_streaming_generators_cleanly():
    lm = bitnn.load("shakespeare", threads=2)
    outcomes, started = [], threading.Barrier(5)

    def stream(s):
        pieces = lm.generate("ROMEO:", 100_000, seed=s, stream=True, context_overflow="slide")
        n = 0
        try:
            for _ in pieces:
                n += 1
                if n == 3:
                    started.wait(TIMEOUT)
            outcomes.append("finished")
        except ValueError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=stream, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    started.wait(TIMEOUT)
    lm.close()
    for t in threads:
        t.join(TIMEOUT)
    assert outcomes == ["the model is closed"] * 4
    with pytest.raises(ValueError, match="closed"):
        lm.generate("A", 1)


# ------------------------------------------------- a file changed while open
def test_mmap_false_survives_the_file_being_truncated(tmp_path):
    path = tmp_path / "m.bnb"
    path.write_bytes(bitnn.model.bundled_models()["fashion"].read_bytes())
    x = np.zeros((2, 1, 28, 28), np.uint8)
    with bitnn.load(path, mmap=False) as m:
        before = m.predict(x)
        path.write_bytes(b"")            # truncated in place (same inode)
        assert np.array_equal(m.predict(x), before)


def test_mmap_true_truncated_file_is_sigbus(tmp_path):
    """What the README says: a mapped file cut short under a model kills the process."""
    path = tmp_path / "m.bnb"
    path.write_bytes(bitnn.model.bundled_models()["fashion"].read_bytes())
    code = ("import sys, numpy as np, bitnn\n"
            "m = bitnn.load(sys.argv[1])\n"
            "m.predict(np.zeros((1, 1, 28, 28), np.uint8))\n"
            "open(sys.argv[1], 'wb').close()\n"
            "m.predict(np.zeros((1, 1, 28, 28), np.uint8))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                       timeout=TIMEOUT)
    assert r.returncode == -signal.SIGBUS, r
