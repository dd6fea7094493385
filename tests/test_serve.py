"""bitnn-run serve: the real server on a free loopback port, driven by the
official openai client and by httpx (needs the serve extra, openai and httpx)."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

import bitnn  # noqa: E402
from bitnn.imageio import fit_image, read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import load_test  # noqa: E402

SAMPLES = ROOT / "bitnn" / "models" / "samples"
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
BIG = 20000   # the servers' --max-tokens: long enough generations to interrupt


class Server:
    def __init__(self, *args, env_key=None):
        self.port = load_test.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("BITNN_API_KEY", None)
        if env_key:
            env["BITNN_API_KEY"] = env_key
        self.proc = load_test.start_server(self.port, ["--max-tokens", str(BIG), *args], env)
        load_test.wait_ready(self.url, self.proc)

    def stop(self):
        return load_test.stop_server(self.proc)

    def metrics(self, headers=AUTH):
        text = httpx.get(self.url + "/metrics", headers=headers, timeout=30).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


@pytest.fixture(scope="module")
def server():
    s = Server("-m", "shakespeare", "-m", "fashion", "--api-key", KEY, "--slots", "2", "-t", "1")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def lm():
    with bitnn.load("shakespeare", threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def clf():
    with bitnn.load("fashion", threads=1) as m:
        yield m


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def post(server, path, headers=AUTH, **kw):
    return httpx.post(server.url + path, headers=headers, timeout=120, **kw)


# ------------------------------------------------------------ completions
def test_models_list(client):
    ids = {m.id: m for m in client.models.list().data}
    assert set(ids) == {"shakespeare", "fashion"}
    assert ids["shakespeare"].owned_by == "bitnn"


def test_completion_matches_in_process_generate(client, lm):
    r = client.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=30,
                                  temperature=0.8, top_p=0.9, seed=11)
    want = lm.generate("ROMEO:", 30, temperature=0.8, top_p=0.9, top_k=0, seed=11)
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(lm.tokenize("ROMEO:"))
    assert r.usage.completion_tokens == 30
    assert r.usage.total_tokens == r.usage.prompt_tokens + 30
    assert r.model == "shakespeare" and r.object == "text_completion"


def test_streaming_matches_and_ends_with_done(client, server, lm):
    chunks = list(client.completions.create(model="shakespeare", prompt="JULIET:", max_tokens=25,
                                            temperature=1.0, seed=5, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == lm.generate("JULIET:", 25, temperature=1.0, top_p=1.0, top_k=0, seed=5)
    finals = [c.choices[0].finish_reason for c in chunks
              if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == 25
    with httpx.stream("POST", server.url + "/v1/completions", headers=AUTH, timeout=60, json={
            "model": "shakespeare", "prompt": "A", "max_tokens": 3, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


def test_token_id_prompt_and_greedy(client, lm):
    ids = lm.tokenize("To be, or not")
    r = client.completions.create(model="shakespeare", prompt=ids, max_tokens=12, temperature=0)
    assert r.choices[0].text == lm.detokenize(lm.generate(ids, 12, temperature=0))
    assert r.usage.prompt_tokens == len(ids)


def test_stop_string(client, lm):
    kw = dict(temperature=0.9, top_p=1.0, seed=3)
    full = lm.generate("ROMEO:", 60, top_k=0, **kw)
    stop = full[10:12]
    r = client.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=60, stop=[stop],
                                  **kw)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == lm.generate("ROMEO:", 60, top_k=0, stop=stop, **kw)
    assert stop not in r.choices[0].text and r.usage.completion_tokens < 60


@pytest.mark.parametrize("body, status, param", [
    ({"prompt": "a"}, 400, "model"),
    ({"model": "nope", "prompt": "a"}, 404, "model"),
    ({"model": "fashion", "prompt": "a"}, 400, "model"),
    ({"model": 3, "prompt": "a"}, 400, "model"),
    ({"model": "shakespeare"}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": ""}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": 7}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": ["a", "b"]}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": [1, 99999]}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": [1, -1]}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": [1, True]}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": [0] * 5000}, 400, "prompt"),
    ({"model": "shakespeare", "prompt": "a", "max_tokens": BIG + 1}, 400, "max_tokens"),
    ({"model": "shakespeare", "prompt": "a", "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "shakespeare", "prompt": "a", "max_tokens": "5"}, 400, "max_tokens"),
    ({"model": "shakespeare", "prompt": "a", "max_tokens": 2.5}, 400, "max_tokens"),
    ({"model": "shakespeare", "prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ({"model": "shakespeare", "prompt": "a", "temperature": -1}, 400, "temperature"),
    ({"model": "shakespeare", "prompt": "a", "top_p": 0}, 400, "top_p"),
    ({"model": "shakespeare", "prompt": "a", "seed": -1}, 400, "seed"),
    ({"model": "shakespeare", "prompt": "a", "seed": 1.5}, 400, "seed"),
    ({"model": "shakespeare", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "shakespeare", "prompt": "a", "stop": [""]}, 400, "stop"),
    ({"model": "shakespeare", "prompt": "a", "stop": 5}, 400, "stop"),
    ({"model": "shakespeare", "prompt": "a", "stream": "yes"}, 400, "stream"),
    ({"model": "shakespeare", "prompt": "a", "n": 2}, 400, "n"),
    ({"model": "shakespeare", "prompt": "a", "logprobs": 2}, 400, "logprobs"),
])
def test_bad_completion_requests_get_4xx(server, body, status, param):
    r = post(server, "/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("content, ctype, status", [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"null", "application/json", 400),
])
def test_bad_bodies_get_400(server, content, ctype, status):
    for path in ("/v1/completions", "/v1/classify"):
        r = post(server, path, content=content, headers={**AUTH, "content-type": ctype})
        assert r.status_code == status and r.json()["error"]["code"] == "invalid_json", r.text


def test_http_errors_are_openai_style(server, client):
    r = httpx.get(server.url + "/v1/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(server.url + "/v1/completions", headers=AUTH)
    assert r.status_code == 405 and "error" in r.json()
    r = post(server, "/v1/completions", content=b"x" * (9 << 20),
             headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="missing", prompt="a")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="shakespeare", prompt="a", max_tokens=-3)


def test_auth(server):
    assert httpx.get(server.url + "/health").status_code == 200
    for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/completions"),
                         ("POST", "/v1/classify"), ("GET", "/nothing")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.request(method, server.url + path, headers=headers, json={})
            assert r.status_code == 401, (path, headers)
            assert r.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_api_key_from_environment():
    s = Server("-m", "fashion", env_key="from-env")
    try:
        assert httpx.get(s.url + "/v1/models").status_code == 401
        r = httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer from-env"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "fashion"
    finally:
        assert s.stop() == 0


# ---------------------------------------------------------------- classify
def _jpeg_and_pgm(img):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0]).save(buf, format="JPEG", quality=95)
    h, w = img.shape[:2]
    return buf.getvalue(), b"P5\n%d %d\n255\n" % (w, h) + img.tobytes()


def test_classify_multipart_matches_in_process(server, clf):
    pngs = sorted(SAMPLES.glob("*.png"))[:3]
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in pngs]
    img = read_image(pngs[0])
    jpeg, pgm = _jpeg_and_pgm(img)
    files += [("file", ("x.jpg", jpeg, "image/jpeg")), ("file", ("x.pgm", pgm, "image/x-pgm"))]
    r = post(server, "/v1/classify", data={"model": "fashion", "top_k": "2"}, files=files)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["filename"] for d in data] == [p.name for p in pngs] + ["x.jpg", "x.pgm"]
    for d, p in zip(data, pngs):
        want = clf.classify(fit_image(read_image(p), 1, 28, 28), top_k=2, layout="NHWC")[0]
        assert [(x["label"], x["probability"]) for x in d["labels"]] == \
            [(label, pytest.approx(prob, abs=1e-6)) for label, prob in want]
    assert data[4]["labels"] == data[0]["labels"]          # PGM: the same pixels as the PNG
    assert data[3]["labels"][0]["label"] == data[0]["labels"][0]["label"]   # JPEG: lossy


def test_classify_json_arrays(server, clf):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    r = post(server, "/v1/classify", json={"model": "fashion", "images": x.tolist(), "top_k": 3})
    assert r.status_code == 200, r.text
    want = clf.classify(x[:, :, :, None], top_k=3, layout="NHWC")
    got = [[(d["label"], d["probability"]) for d in row["labels"]] for row in r.json()["data"]]
    assert [[lab for lab, _ in row] for row in got] == [[lab for lab, _ in row] for row in want]
    np.testing.assert_allclose([[p for _, p in row] for row in got],
                               [[p for _, p in row] for row in want], atol=1e-6)
    # (C, H, W) images too
    r2 = post(server, "/v1/classify", json={"model": "fashion", "images": x[:, None].tolist()})
    assert [row["labels"][0] for row in r2.json()["data"]] == \
        [row["labels"][0] for row in r.json()["data"]]


@pytest.mark.parametrize("kw, param", [
    ({"json": {"images": [[[0] * 28] * 28]}}, "model"),
    ({"json": {"model": "shakespeare", "images": [[[0] * 28] * 28]}}, "model"),
    ({"json": {"model": "nope", "images": [[[0] * 28] * 28]}}, "model"),
    ({"json": {"model": "fashion"}}, "images"),
    ({"json": {"model": "fashion", "images": []}}, "images"),
    ({"json": {"model": "fashion", "images": [[[300] * 28] * 28]}}, "images"),
    ({"json": {"model": "fashion", "images": [[[0.5] * 28] * 28]}}, "images"),
    ({"json": {"model": "fashion", "images": [[[0] * 28] * 27 + [[0] * 5]]}}, "images"),
    ({"json": {"model": "fashion", "images": [[["a"] * 28] * 28]}}, "images"),
    ({"json": {"model": "fashion", "images": [[[0] * 20] * 20]}}, "images"),
    ({"json": {"model": "fashion", "images": [[[0] * 28] * 28], "top_k": 0}}, "top_k"),
    ({"data": {"model": "fashion"}, "files": [("file", ("a.png", b"not an image", "image/png"))]},
     "file"),
    ({"data": {"model": "fashion"}, "files": [("other", ("a.png", b"x", "image/png"))]}, "file"),
    ({"data": {"model": "fashion", "top_k": "x"},
      "files": [("file", ("a.png", (SAMPLES / "ankle-boot.png").read_bytes(), "image/png"))]},
     "top_k"),
    ({"data": {"top_k": "1"}, "files": [("file", ("a.png", b"x", "image/png"))]}, "model"),
])
def test_bad_classify_requests_get_400(server, kw, param):
    r = post(server, "/v1/classify", **kw)
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["param"] == param


def test_truncated_png_is_400(server):
    data = (SAMPLES / "ankle-boot.png").read_bytes()
    r = post(server, "/v1/classify", data={"model": "fashion"},
             files=[("file", ("t.png", data[:len(data) // 2], "image/png"))])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image"


# ------------------------------------------------- metrics, disconnects, load
def test_metrics(server, client):
    client.completions.create(model="shakespeare", prompt="A", max_tokens=4, seed=1)
    post(server, "/v1/classify", json={"model": "fashion", "images": [[[0] * 28] * 28]})
    post(server, "/v1/completions", json={"model": "nope", "prompt": "a"})
    m = server.metrics()
    assert m['bitnn_generated_tokens_total{model="shakespeare"}'] >= 4
    assert m['bitnn_images_classified_total{model="fashion"}'] >= 1
    assert m['bitnn_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    assert m['bitnn_request_errors_total{endpoint="/v1/completions",status="404"}'] >= 1
    assert m['bitnn_request_latency_seconds_count{endpoint="/v1/classify"}'] >= 1
    assert 'bitnn_time_to_first_token_seconds_count{model="shakespeare"}' in m
    assert m["bitnn_queue_depth"] == 0


def _wait(cond, what, timeout=60):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_stops_generation(server, stream):
    key = 'bitnn_generations_cancelled_total{model="shakespeare"}'
    before = server.metrics().get(key, 0)
    tokens_before = server.metrics()['bitnn_generated_tokens_total{model="shakespeare"}']
    body = {"model": "shakespeare", "prompt": "ROMEO:", "max_tokens": BIG, "stream": stream}
    if stream:
        with httpx.stream("POST", server.url + "/v1/completions", headers=AUTH, json=body,
                          timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/completions", headers=AUTH, json=body, timeout=1.0)
    _wait(lambda: server.metrics().get(key, 0) > before, "the generation to be cancelled")
    _wait(lambda: server.metrics()["bitnn_requests_running"] == 0, "the slot to be freed")
    spent = server.metrics()['bitnn_generated_tokens_total{model="shakespeare"}'] - tokens_before
    assert spent < BIG


def test_load_small(server):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "load_test.py"), "--url", server.url,
                        "--clients", "8", "--requests", "3", "--max-tokens", "8",
                        "--api-key", KEY, "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["requests"] == 24 and out["failed"] == 0


def test_load_test_refuses_other_hosts():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "load_test.py"), "--url",
                        "http://example.com:80"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "loopback" in r.stderr


# ------------------------------------------- queue, shutdown, files, CLI
def test_busy_server_answers_503_then_recovers():
    s = Server("-m", "shakespeare", "--slots", "1", "--max-queue", "0", "-t", "1")
    try:
        body = {"model": "shakespeare", "prompt": "A", "max_tokens": BIG, "stream": True}
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()          # (kept: a dropped iterator closes the stream)
            next(lines)                     # the slot is taken
            busy = httpx.post(s.url + "/v1/completions", timeout=60,
                              json={"model": "shakespeare", "prompt": "A", "max_tokens": 1})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "server_busy"
        _wait(lambda: s.metrics({})["bitnn_requests_running"] == 0, "the slot to be freed")
        ok = httpx.post(s.url + "/v1/completions", timeout=60,
                        json={"model": "shakespeare", "prompt": "A", "max_tokens": 1})
        assert ok.status_code == 200
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_requests_in_flight_then_exits(tmp_path):
    s = Server("-m", "shakespeare", "--slots", "1", "-t", "1", "--shutdown-timeout", "60")
    # Streamed, so that the first event proves the generation is under way
    # when SIGTERM arrives (a fast machine finishes a short one between polls).
    with httpx.stream("POST", s.url + "/v1/completions", timeout=120, json={
            "model": "shakespeare", "prompt": "A", "max_tokens": 3000, "seed": 1,
            "stream": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(lines)
        os.killpg(s.proc.pid, signal.SIGTERM)
        events = [ln for ln in [first, *lines] if ln.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    finishes = [c["finish_reason"] for e in events[:-1]
                for c in json.loads(e[len("data: "):])["choices"] if c.get("finish_reason")]
    assert finishes == ["length"]
    assert s.proc.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/health", timeout=5)


def test_sigterm_cancels_requests_past_the_timeout():
    s = Server("-m", "shakespeare", "--slots", "1", "-t", "1", "--shutdown-timeout", "0.5")
    try:
        with httpx.stream("POST", s.url + "/v1/completions", timeout=60, json={
                "model": "shakespeare", "prompt": "A", "max_tokens": BIG, "stream": True}) as r:
            lines = r.iter_lines()
            next(lines)
            os.killpg(s.proc.pid, signal.SIGTERM)
            assert s.proc.wait(60) == 0
    except httpx.HTTPError:
        pass                              # the connection was cut: that is the point
    finally:
        s.stop()
    assert s.proc.returncode == 0


def test_served_file_truncated_on_disk_keeps_working(tmp_path):
    """The server reads model files (mmap=False) unless --mmap: truncation cannot kill it."""
    path = tmp_path / "mine.bnb"
    shutil.copy(ROOT / "bitnn" / "models" / "fashion.bnb", path)
    s = Server("-m", str(path))
    try:
        ids = [m["id"] for m in httpx.get(s.url + "/v1/models").json()["data"]]
        assert ids == ["mine"]
        body = {"model": "mine", "images": [[[0] * 28] * 28]}
        first = httpx.post(s.url + "/v1/classify", json=body, timeout=60).json()
        path.write_bytes(b"")
        again = httpx.post(s.url + "/v1/classify", json=body, timeout=60)
        assert again.status_code == 200 and again.json()["data"] == first["data"]
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("args, message", [
    (["-m", "nope"], "no model file 'nope'"),
    (["-m", "fashion", "-m", "fashion"], "two models have the id 'fashion'"),
    (["--slots", "0"], "--slots must be at least 1"),
    (["--port", "70000"], "--port must be from 0 to 65535"),
])
def test_cli_errors_are_one_line(args, message):
    r = subprocess.run([sys.executable, "-m", "bitnn.cli", "serve", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr, r.stderr


def test_cli_without_the_extra_says_how_to_install():
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from bitnn.cli import main; sys.exit(main(['serve']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "pip install 'bitnn[serve]'" in r.stderr


def test_cli_help_lists_serve():
    r = subprocess.run([sys.executable, "-m", "bitnn.cli", "serve", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--api-key" in r.stdout and "127.0.0.1" in r.stdout


def test_huge_declared_image_is_400_not_decoded(server):
    import struct
    import zlib

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
           + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    r = post(server, "/v1/classify", data={"model": "fashion"},
             files=[("file", ("bomb.png", png, "image/png"))])
    assert r.status_code == 400 and "pixels" in r.json()["error"]["message"], r.text
