"""``bitnn-run serve``: an HTTP server for bitnn models (the ``serve`` extra).

    pip install ".[serve]"
    bitnn-run serve -m shakespeare -m fashion --host 127.0.0.1 --port 8080

Endpoints (OpenAI-compatible where OpenAI has one):

- ``GET /v1/models``: the models served; a model's id is its bundled name
  or its file name without ``.bnb``.
- ``POST /v1/completions``: text from a language model; ``prompt`` is a
  string or a list of token ids; ``stream: true`` sends server-sent events
  ending in ``data: [DONE]``.
- ``POST /v1/classify``: labels and probabilities for images (multipart
  ``file`` parts of PNG/JPEG/PGM/PPM, or JSON pixel arrays).
- ``GET /health`` (never needs the API key) and ``GET /metrics`` (Prometheus).

Compute runs in a pool of ``--slots`` threads outside the event loop (the C
core releases the GIL); at most ``--max-queue`` more requests wait for a
slot, the next ones get 503. A client that disconnects stops its generation.
SIGTERM stops accepting connections, lets requests in flight finish for up to
``--shutdown-timeout`` seconds, then cancels the rest.

This module imports Starlette, uvicorn and prometheus-client only when a
server is built, so ``bitnn-run --help`` works without them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import io
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXTRA_HINT = ("bitnn-run serve needs the serve extra: pip install 'bitnn[serve]' "
              "(from a checkout: pip install '.[serve]')")


# ----------------------------------------------------------------- settings
@dataclass
class Limits:
    """Bounds on what one request may ask for (each a command-line option)."""
    max_body_bytes: int = 8 << 20
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024
    max_images: int = 256
    max_image_pixels: int = 4096 * 4096


class ApiError(Exception):
    """A request the server refuses, with its HTTP status and OpenAI-style error fields."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_
        self.param, self.code = param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def model_id(spec: str) -> str:
    """The id clients use: a bundled name as given, else the file name without .bnb."""
    from bitnn.model import bundled_models

    if spec in bundled_models() and not Path(spec).exists():
        return spec
    name = Path(spec).name
    return name[:-4] if name.endswith(".bnb") else name


def open_models(specs, threads=None, mmap=False, kernel=None) -> dict:
    """{id: model} for the given paths or bundled names; ValueError on a clash."""
    import bitnn

    models = {}
    try:
        for spec in specs:
            mid = model_id(spec)
            if mid in models:
                raise ValueError(f"two models have the id {mid!r}: rename one of the files")
            models[mid] = bitnn.load(spec, threads=threads, mmap=mmap, kernel=kernel)
    except BaseException:
        for m in models.values():
            m.close()
        raise
    return models


# ---------------------------------------------------------- request checks
def _get(body: dict, name: str, kind, default=None, *, check=None, what=None):
    """body[name] if of the wanted kind (int excludes bool; float accepts int)."""
    if name not in body or body[name] is None:
        return default
    v = body[name]
    ok = not isinstance(v, bool) if kind in (int, float) else True
    if kind is float:
        ok = ok and isinstance(v, (int, float))
    else:
        ok = ok and isinstance(v, kind)
    if ok and check is not None:
        ok = check(v)
    if not ok:
        raise ApiError(400, f"'{name}' must be {what or kind.__name__}, got {json.dumps(v)[:80]}",
                       param=name, code="invalid_value")
    return float(v) if kind is float else v


def parse_json(raw: bytes):
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


@dataclass
class CompletionRequest:
    model: str
    ids: list
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    seed: int
    stop: list
    stream: bool
    include_usage: bool


def parse_completion(body: dict, models: dict, limits: Limits) -> CompletionRequest:
    """Checks a /v1/completions body against the models and limits (ApiError if bad)."""
    mid = _get(body, "model", str, what="a model id")
    if mid is None:
        raise ApiError(400, "'model' is required", param="model", code="missing_required_parameter")
    model = find_model(models, mid, "lm")
    prompt = body.get("prompt")
    # OpenAI also accepts a list holding one prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise ApiError(400, "'prompt' is empty", param="prompt", code="invalid_value")
        if model.tokenizer is None:
            raise ApiError(400, f"model {mid!r} has no tokenizer: send the prompt as token ids",
                           param="prompt", code="invalid_value")
        if len(prompt) > limits.max_prompt_tokens * 64:   # cheap bound before tokenizing
            raise ApiError(400, f"the prompt is longer than {limits.max_prompt_tokens} tokens",
                           param="prompt", code="context_length_exceeded")
        ids = model.tokenize(prompt)
        if not ids:
            raise ApiError(400, "the prompt encodes to no tokens", param="prompt",
                           code="invalid_value")
    elif isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        bad = [t for t in prompt if not 0 <= t < model.vocab_size]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is out of the vocabulary "
                           f"(0..{model.vocab_size - 1})", param="prompt", code="invalid_value")
        ids = list(prompt)
    else:
        raise ApiError(400, "'prompt' must be a non-empty string or a non-empty list of token ids "
                       "(one prompt per request)", param="prompt", code="invalid_value")
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; this server accepts at most "
                       f"{limits.max_prompt_tokens}", param="prompt",
                       code="context_length_exceeded")
    max_tokens = _get(body, "max_tokens", int, 16, check=lambda v: 0 <= v <= limits.max_tokens,
                      what=f"an integer from 0 to {limits.max_tokens}")
    temperature = _get(body, "temperature", float, 1.0, check=lambda v: 0 <= v <= 2,
                       what="a number from 0 to 2")
    top_p = _get(body, "top_p", float, 1.0, check=lambda v: 0 < v <= 1, what="a number in (0, 1]")
    top_k = _get(body, "top_k", int, 0, check=lambda v: 0 <= v <= model.vocab_size,
                 what=f"an integer from 0 to {model.vocab_size}")
    rep = _get(body, "repetition_penalty", float, 1.0, check=lambda v: 0 < v <= 10,
               what="a number in (0, 10]")
    seed = _get(body, "seed", int, None, check=lambda v: 0 <= v < 2**63,
                what="an integer from 0 to 2^63-1")
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise ApiError(400, "'stop' must be a string or a list of at most 4 strings",
                       param="stop", code="invalid_value")
    if any(not s for s in stops):
        raise ApiError(400, "'stop' strings must not be empty", param="stop", code="invalid_value")
    if stops and model.tokenizer is None:
        raise ApiError(400, "'stop' needs a model with a tokenizer", param="stop",
                       code="invalid_value")
    stream = _get(body, "stream", bool, False, what="true or false")
    opts = _get(body, "stream_options", dict, {}, what="an object")
    include_usage = _get(opts, "include_usage", bool, False, what="true or false")
    n = _get(body, "n", int, 1, check=lambda v: v == 1, what="1 (one choice per request)")
    best_of = _get(body, "best_of", int, 1, check=lambda v: v == 1, what="1")
    del n, best_of
    if body.get("echo"):
        raise ApiError(400, "'echo' is not supported", param="echo", code="unsupported_value")
    if body.get("logprobs") is not None:
        raise ApiError(400, "'logprobs' is not supported", param="logprobs",
                       code="unsupported_value")
    return CompletionRequest(mid, ids, max_tokens, temperature, top_p, top_k, rep, seed, stops,
                             stream, include_usage)


def find_model(models: dict, mid: str, kind: str):
    model = models.get(mid)
    if model is None:
        raise ApiError(404, f"the model {mid!r} does not exist; served: {', '.join(models)}",
                       param="model", code="model_not_found")
    if model.kind != kind:
        what = "a language model" if kind == "lm" else "an image classifier"
        raise ApiError(400, f"the model {mid!r} is not {what}", param="model",
                       code="wrong_model_kind")
    return model


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """uint8 (H, W, C) pixels of a PNG, JPEG, PGM/PPM (ValueError if not one)."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise ValueError(f"the image has far more than {max_pixels} pixels") from None
        except Exception:  # noqa: BLE001 - Pillow raises many kinds for junk
            raise ValueError("not an image Pillow can read (send PNG, JPEG, PGM or PPM)") from None
        with im:
            if im.width * im.height > max_pixels:
                raise ValueError(f"the image is {im.width}x{im.height}; at most {max_pixels} "
                                 "pixels are accepted")
            try:
                return np.asarray(im.convert("RGB" if im.mode not in ("L", "LA") else "L"))
            except Exception as e:  # noqa: BLE001 - truncated or corrupt data
                raise ValueError(f"the image cannot be decoded: {e}") from None
    from bitnn import imageio

    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if w * h > max_pixels:
            raise ValueError(f"the image is {w}x{h}; at most {max_pixels} pixels are accepted")
        try:
            return imageio.read_png(data)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"the PNG cannot be decoded: {e}") from None
    if data[:2] in (b"P5", b"P6"):
        try:
            return imageio._read_pnm(data)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"the PGM/PPM cannot be decoded: {e}") from None
    raise ValueError("not a PNG, PGM or PPM (install Pillow for JPEG)")


def json_images(images, model) -> np.ndarray:
    """A uint8 batch from JSON pixel arrays: a list of (H, W), (H, W, C) or (C, H, W) images."""
    if not isinstance(images, list) or not images:
        raise ApiError(400, "'images' must be a non-empty list of images (nested arrays of "
                       "pixels 0..255)", param="images", code="invalid_value")
    try:
        a = np.asarray(images)
    except ValueError:
        a = None
    if a is None or a.dtype == object or a.dtype.kind not in "iuf" or a.ndim not in (3, 4):
        raise ApiError(400, "'images' must hold images of one shape, each (H, W), (H, W, C) or "
                       "(C, H, W), of numbers", param="images", code="invalid_value")
    if not np.isfinite(a).all() or (a != np.round(a)).any() or a.min() < 0 or a.max() > 255:
        raise ApiError(400, "pixels must be whole numbers from 0 to 255", param="images",
                       code="invalid_value")
    C, H, W = model.input_shape
    if a.ndim == 3 and C == 1 and a.shape[1:] == (H, W):
        a = a[..., None]
    if a.ndim == 4 and a.shape[1:] == (H, W, C):
        return a.astype(np.uint8)
    if a.ndim == 4 and a.shape[1:] == (C, H, W):
        return a.astype(np.uint8).transpose(0, 2, 3, 1)
    raise ApiError(400, f"each image must be {H}x{W} with {C} channel{'s' * (C > 1)} "
                   f"((H, W, C) or (C, H, W)), got shape {list(a.shape[1:])}",
                   param="images", code="invalid_value")


# ------------------------------------------------------------------ the app
class Busy(Exception):
    pass


class Admission:
    """At most `slots` requests compute at once; at most `max_queue` wait for a slot."""

    def __init__(self, slots: int, max_queue: int, on_change):
        self.slots, self.max_queue = slots, max_queue
        self.running = self.waiting = 0
        self._sem = asyncio.Semaphore(slots)
        self._on_change = on_change

    async def __aenter__(self):
        if self.running + self.waiting >= self.slots + self.max_queue:
            raise ApiError(503, f"the server is busy ({self.running} requests running, "
                           f"{self.waiting} waiting): retry later", type_="server_overloaded",
                           code="server_busy", headers={"Retry-After": "1"})
        self.waiting += 1
        self._on_change(self)
        try:
            await self._sem.acquire()
        except BaseException:
            self.waiting -= 1
            self._on_change(self)
            raise
        self.waiting -= 1
        self.running += 1
        self._on_change(self)
        return self

    async def __aexit__(self, *exc):
        self.running -= 1
        self._sem.release()
        self._on_change(self)


def build_app(models: dict, *, slots: int = 2, max_queue: int = 64, limits: Limits | None = None,
              api_key: str | None = None):
    """The Starlette application serving `models` ({id: bitnn model})."""
    try:
        import prometheus_client as prom
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError as e:
        raise ImportError(f"{EXTRA_HINT} ({e})") from None

    limits = limits or Limits()
    created = int(time.time())
    reg = prom.CollectorRegistry()
    m_requests = prom.Counter("bitnn_requests", "HTTP requests answered", ["endpoint", "status"],
                              registry=reg)
    m_errors = prom.Counter("bitnn_request_errors", "Requests answered with an error status",
                            ["endpoint", "status"], registry=reg)
    m_latency = prom.Histogram("bitnn_request_latency_seconds", "Time to the whole answer",
                               ["endpoint"], registry=reg,
                               buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
    m_ttft = prom.Histogram("bitnn_time_to_first_token_seconds",
                            "Time to the first generated token",
                            ["model"], registry=reg,
                            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
    m_tokens = prom.Counter("bitnn_generated_tokens", "Tokens generated", ["model"], registry=reg)
    m_prompt = prom.Counter("bitnn_prompt_tokens", "Prompt tokens read", ["model"], registry=reg)
    m_images = prom.Counter("bitnn_images_classified", "Images classified", ["model"], registry=reg)
    m_cancelled = prom.Counter("bitnn_generations_cancelled",
                               "Generations stopped because the client went away or the server "
                               "shut down", ["model"], registry=reg)
    m_queue = prom.Gauge("bitnn_queue_depth", "Requests waiting for a compute slot", registry=reg)
    m_running = prom.Gauge("bitnn_requests_running", "Requests holding a compute slot",
                           registry=reg)

    def on_change(adm):
        m_queue.set(adm.waiting)
        m_running.set(adm.running)

    state = {"admission": None, "executor": ThreadPoolExecutor(slots, thread_name_prefix="bitnn"),
             "stopping": threading.Event()}

    def admission():
        if state["admission"] is None:   # made on the server's event loop
            state["admission"] = Admission(slots, max_queue, on_change)
        return state["admission"]

    def error_response(e: ApiError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    async def read_body(request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit()
                                     or int(declared) > limits.max_body_bytes):
            raise ApiError(413, f"the request body is larger than {limits.max_body_bytes} bytes",
                           code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise ApiError(413,
                               f"the request body is larger than {limits.max_body_bytes} bytes",
                               code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    # ---------------------------------------------------------- endpoints
    async def health(request):
        return JSONResponse({"status": "stopping" if state["stopping"].is_set() else "ok",
                             "models": list(models)})

    async def list_models(request):
        return JSONResponse({"object": "list", "data": [
            {"id": mid, "object": "model", "created": created, "owned_by": "bitnn",
             "kind": "language_model" if m.kind == "lm" else "image_classifier"}
            for mid, m in models.items()]})

    async def metrics(request):
        return Response(prom.generate_latest(reg), media_type=prom.CONTENT_TYPE_LATEST)

    def _stopped(cancel):
        """The request's cancel, or the server stopping (after the shutdown timeout
        uvicorn cancels the request tasks, but a compute thread only sees this)."""
        return cancel.is_set() or state["stopping"].is_set()

    def generation_thread(req, model, loop, queue, cancel):
        """Runs in a compute thread: puts ("text", str), then ("end", info) or ("error", exc)."""
        counted = {"n": 0, "ids": []}

        def counting(steps):
            for t in steps:
                if _stopped(cancel):
                    return
                counted["n"] += 1
                counted["ids"].append(t)
                if counted["n"] == 1:
                    loop.call_soon_threadsafe(queue.put_nowait, ("first", None, None))
                yield t

        def put(item):
            loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            steps = model.generate(req.ids, req.max_tokens, temperature=req.temperature,
                                   top_k=req.top_k, top_p=req.top_p,
                                   repetition_penalty=req.repetition_penalty, seed=req.seed,
                                   stream=True)
            steps = counting(steps)
            if model.tokenizer is None:
                for t in steps:
                    put(("text", "", t))
            else:
                # the same text pieces as generate(text, stream=True): complete UTF-8, cut at stop
                for piece in model._text_pieces(steps, req.stop, req.ids):
                    put(("text", piece, None))
                    if _stopped(cancel):
                        break
            stopped = counted["n"] < req.max_tokens
            # counted here, not by the request, which may be gone
            m_tokens.labels(req.model).inc(counted["n"])
            if _stopped(cancel):
                m_cancelled.labels(req.model).inc()
            stopped = stopped or _cut_by_stop(model, req, counted["ids"])
            put(("end", {"completion_tokens": counted["n"], "cancelled": _stopped(cancel),
                         "finish_reason": "stop" if stopped else "length"}, None))
        except BaseException as e:  # noqa: BLE001 - handed to the event loop
            m_tokens.labels(req.model).inc(counted["n"])
            put(("error", e, None))

    def _cut_by_stop(model, req, ids):
        if not req.stop or model.tokenizer is None:
            return False
        text = model.detokenize(ids)
        return any(s in text for s in req.stop)

    async def completions(request):
        t0 = time.perf_counter()
        body = parse_json(await read_body(request))
        req = parse_completion(body, models, limits)
        model = models[req.model]
        adm = admission()
        ctx = await adm.__aenter__()   # 503 before any byte of the answer when full
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        fut = loop.run_in_executor(state["executor"], generation_thread, req, model, loop,
                                   queue, cancel)
        cid = "cmpl-" + uuid.uuid4().hex
        m_prompt.labels(req.model).inc(len(req.ids))

        async def next_event():
            """The next ("text" | "end" | "error", payload, token) from the compute thread."""
            while True:
                kind, payload, tok = await queue.get()
                if kind != "first":
                    return kind, payload, tok
                m_ttft.labels(req.model).observe(time.perf_counter() - t0)

        async def cleanup():
            """Stops the generation (if still running), waits for its thread, frees the slot."""
            cancel.set()
            try:
                await asyncio.shield(fut)
            finally:
                await ctx.__aexit__(None, None, None)

        def finish(info):
            return {"prompt_tokens": len(req.ids), "completion_tokens": info["completion_tokens"],
                    "total_tokens": len(req.ids) + info["completion_tokens"]}

        def chunk(text, finish_reason, usage=None, tokens=None):
            out = {"id": cid, "object": "text_completion", "created": int(time.time()),
                   "model": req.model,
                   "choices": [] if usage is not None else [
                       {"text": text, "index": 0, "logprobs": None,
                        "finish_reason": finish_reason}]}
            if tokens is not None and usage is None:
                out["choices"][0]["token_ids"] = tokens
            if usage is not None:
                out["usage"] = usage
            return out

        if req.stream:
            async def sse():
                ok = False
                try:
                    while True:
                        kind, payload, tok = await next_event()
                        if kind == "text":
                            part = chunk(payload, None, tokens=None if tok is None else [tok])
                            yield "data: " + json.dumps(part) + "\n\n"
                        elif kind == "end":
                            usage = finish(payload)
                            last = chunk("", payload["finish_reason"])
                            yield "data: " + json.dumps(last) + "\n\n"
                            if req.include_usage:
                                yield "data: " + json.dumps(chunk("", None, usage)) + "\n\n"
                            ok = True
                        else:
                            err = ApiError(500, f"generation failed: {payload}",
                                           type_="server_error")
                            yield "data: " + json.dumps(err.body()) + "\n\n"
                        if kind != "text":
                            break
                    yield "data: [DONE]\n\n"
                finally:
                    await cleanup()
                    m_requests.labels("/v1/completions", "200").inc()
                    if not ok:
                        m_errors.labels("/v1/completions", "stream_aborted").inc()
                    m_latency.labels("/v1/completions").observe(time.perf_counter() - t0)

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        # not streamed: collect, stop if the client goes away
        parts, tokens, info = [], [], None
        checked = time.monotonic()
        try:
            while info is None:
                nxt = asyncio.ensure_future(next_event())
                while True:
                    done, _ = await asyncio.wait({nxt}, timeout=0.25)
                    if not done or time.monotonic() - checked > 0.25:
                        checked = time.monotonic()
                        if await request.is_disconnected():
                            nxt.cancel()
                            raise ClientDisconnect()
                    if done:
                        break
                kind, payload, tok = nxt.result()
                if kind == "text":
                    parts.append(payload)
                    if tok is not None:
                        tokens.append(tok)
                elif kind == "end":
                    info = payload
                else:
                    raise payload
        finally:
            await cleanup()
        usage = finish(info)
        out = chunk("".join(parts), info["finish_reason"],
                    tokens=tokens if model.tokenizer is None else None)
        out["usage"] = usage
        return JSONResponse(out)

    async def classify(request):
        ctype = request.headers.get("content-type", "")
        top_k_raw = None
        if ctype.startswith("multipart/form-data"):
            declared = request.headers.get("content-length")
            if declared is None or not declared.isdigit() or int(declared) > limits.max_body_bytes:
                raise ApiError(413 if declared and declared.isdigit() else 411,
                               f"multipart bodies need a Content-Length of at most "
                               f"{limits.max_body_bytes} bytes", code="body_too_large")
            try:
                form = await request.form(max_files=limits.max_images, max_fields=16,
                                          max_part_size=limits.max_body_bytes)
            except HTTPException as e:
                raise ApiError(400, f"bad multipart body: {e.detail}",
                               code="invalid_multipart") from None
            except Exception as e:  # noqa: BLE001 - the multipart parser's own errors
                raise ApiError(400, f"bad multipart body: {e}", code="invalid_multipart") from None
            try:
                mid = form.get("model")
                if not isinstance(mid, str) or not mid:
                    raise ApiError(400, "the form field 'model' is required", param="model",
                                   code="missing_required_parameter")
                model = find_model(models, mid, "classifier")
                top_k_raw = form.get("top_k")
                files = [f for f in form.getlist("file") if not isinstance(f, str)]
                if not files:
                    raise ApiError(400, "send one or more images as form parts named 'file'",
                                   param="file", code="missing_required_parameter")
                x = [await f.read() for f in files]     # decoded in a compute slot
                names = [f.filename for f in files]
            finally:
                await form.close()
            if top_k_raw is not None:
                if not top_k_raw.isdigit():
                    raise ApiError(400, "'top_k' must be a whole number", param="top_k",
                                   code="invalid_value")
                top_k_raw = int(top_k_raw)
        else:
            body = parse_json(await read_body(request))
            mid = _get(body, "model", str, what="a model id")
            if mid is None:
                raise ApiError(400, "'model' is required", param="model",
                               code="missing_required_parameter")
            model = find_model(models, mid, "classifier")
            images = body.get("images")
            if isinstance(images, list) and len(images) > limits.max_images:
                raise ApiError(400, f"at most {limits.max_images} images per request",
                               param="images", code="invalid_value")
            x = json_images(images, model)
            names = [None] * len(x)
            top_k_raw = body.get("top_k")
            if top_k_raw is not None:
                top_k_raw = _get(body, "top_k", int, check=lambda v: v >= 1,
                                 what="an integer >= 1")
        top_k = 5 if top_k_raw is None else top_k_raw
        if top_k < 1:
            raise ApiError(400, "'top_k' must be at least 1", param="top_k", code="invalid_value")
        if len(x) > limits.max_images:
            raise ApiError(400, f"at most {limits.max_images} images per request", param="file",
                           code="invalid_value")

        def compute():
            batch = x
            if isinstance(x, list):   # encoded files
                from bitnn.imageio import fit_image

                C, H, W = model.input_shape
                batch = []
                for i, data in enumerate(x):
                    try:
                        img = decode_image(data, limits.max_image_pixels)
                    except ValueError as e:
                        raise ApiError(400, f"file {i} ({names[i]}): {e}", param="file",
                                       code="invalid_image") from None
                    batch.append(fit_image(img, C, H, W))
                batch = np.stack(batch)
            return model.classify(batch, top_k=top_k, layout="NHWC")

        loop = asyncio.get_running_loop()
        async with admission():
            top = await loop.run_in_executor(state["executor"], compute)
        m_images.labels(mid).inc(len(x))
        return JSONResponse({"object": "list", "model": mid, "data": [
            {"index": i, "filename": names[i],
             "labels": [{"label": label, "probability": p} for label, p in row]}
            for i, row in enumerate(top)]})

    # ------------------------------------------------------- the plumbing
    def wrap(endpoint, path):
        async def handler(request):
            t0 = time.perf_counter()
            try:
                response = await endpoint(request)
            except ApiError as e:
                response = error_response(e)
            except ClientDisconnect:
                m_requests.labels(path, "499").inc()
                m_errors.labels(path, "499").inc()
                return Response(status_code=499)
            except Exception as e:  # noqa: BLE001 - a bug: answer 500, keep serving
                print(f"bitnn-run serve: {path}: {type(e).__name__}: {e}", file=sys.stderr)
                response = error_response(ApiError(500, "internal error", type_="server_error"))
            if not isinstance(response, StreamingResponse):
                status = str(response.status_code)
                m_requests.labels(path, status).inc()
                if response.status_code >= 400:
                    m_errors.labels(path, status).inc()
                m_latency.labels(path).observe(time.perf_counter() - t0)
            return response
        return handler

    async def http_error(request, exc):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(ApiError(exc.status_code, f"{exc.detail}: {request.method} "
                                       f"{request.url.path}", code=code))

    routes = [Route("/health", wrap(health, "/health"), methods=["GET"]),
              Route("/metrics", wrap(metrics, "/metrics"), methods=["GET"]),
              Route("/v1/models", wrap(list_models, "/v1/models"), methods=["GET"]),
              Route("/v1/completions", wrap(completions, "/v1/completions"), methods=["POST"]),
              Route("/v1/classify", wrap(classify, "/v1/classify"), methods=["POST"])]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        # uvicorn has already waited for (or cancelled) requests in flight
        state["stopping"].set()
        state["executor"].shutdown(wait=True, cancel_futures=True)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                    lifespan=lifespan)
    app.state.bitnn = state

    if api_key:
        want = ("Bearer " + api_key).encode()
        inner = app

        async def auth(scope, receive, send):
            if scope["type"] == "http" and scope["path"] != "/health":
                got = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(got, want):
                    e = ApiError(401, "a valid API key is required: send 'Authorization: Bearer "
                                 "<key>'", code="invalid_api_key")
                    m_requests.labels("auth", "401").inc()
                    m_errors.labels("auth", "401").inc()
                    await JSONResponse(e.body(), status_code=401,
                                       headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                    return
            await inner(scope, receive, send)

        return auth
    return app


# -------------------------------------------------------------- the command
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the ``serve`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "serve", help="serve models over HTTP (OpenAI-compatible; needs the serve extra)",
        description="Serve bitnn models over HTTP: GET /v1/models, POST /v1/completions "
                    "(OpenAI-compatible, streaming with stream=true), POST /v1/classify, "
                    "GET /health, GET /metrics (Prometheus). Needs: pip install 'bitnn[serve]'.")
    configure_parser(p)
    return p


def configure_parser(p: argparse.ArgumentParser) -> None:
    from bitnn.cli import add_compute_args

    p.add_argument("-m", "--model", action="append", dest="models", metavar="MODEL",
                   help="a .bnb file or a bundled model name; repeat for several "
                        "(default: every bundled model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health "
                        "(default: the BITNN_API_KEY environment variable; none if unset)")
    add_compute_args(p, precision=False, threads_help="compute threads per call")
    p.add_argument("--slots", type=int, default=2,
                   help="requests computed at once (default: 2)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait for a slot; more get 503 (default: 64)")
    p.add_argument("--mmap", action="store_true",
                   help="memory-map the model files instead of reading them (saves memory; a "
                        "file truncated while served then kills the server with SIGBUS; "
                        "default: off, the files are read)")
    d = Limits()
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"largest request body (default: {d.max_body_bytes})")
    p.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens,
                   help=f"longest prompt in tokens (default: {d.max_prompt_tokens})")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens,
                   help=f"largest max_tokens a request may ask for (default: {d.max_tokens})")
    p.add_argument("--max-images", type=int, default=d.max_images,
                   help=f"most images per classify request (default: {d.max_images})")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds requests in flight get to finish after SIGTERM/Ctrl-C before "
                        "they are cancelled (default: 10)")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: warning)")
    p.set_defaults(func=run)


def _graceful_server_class():
    import signal

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn.Server that exits with status 0 after a SIGTERM/SIGINT shutdown (uvicorn
        itself re-raises the signal at the end, so the process would die of it)."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {sig: signal.signal(sig, self.handle_exit)
                   for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    return GracefulServer


def run(args) -> int:
    """Runs the server until SIGTERM/SIGINT. Returns the exit status."""
    def fail(msg):
        print(f"bitnn-run serve: {msg}", file=sys.stderr)
        return 2

    for name in ("slots", "max_body_bytes", "max_prompt_tokens", "max_tokens", "max_images"):
        if getattr(args, name) < 1:
            return fail(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_queue < 0:
        return fail("--max-queue must be at least 0")
    if not 0 <= args.port <= 65535:
        return fail("--port must be from 0 to 65535")
    if not args.shutdown_timeout >= 0:
        return fail("--shutdown-timeout must be >= 0")
    try:
        import uvicorn
    except ImportError:
        return fail(EXTRA_HINT)
    import bitnn
    from bitnn.model import bundled_models

    specs = args.models or list(bundled_models())
    try:
        models = open_models(specs, threads=args.threads, mmap=args.mmap)
    except (OSError, ValueError, bitnn.KernelError) as e:
        return fail(str(e))
    api_key = args.api_key if args.api_key is not None else os.environ.get("BITNN_API_KEY") or None
    limits = Limits(args.max_body_bytes, args.max_prompt_tokens, args.max_tokens, args.max_images)
    try:
        app = build_app(models, slots=args.slots, max_queue=args.max_queue, limits=limits,
                        api_key=api_key)
    except ImportError as e:
        return fail(str(e))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=args.shutdown_timeout, access_log=False,
                            lifespan="on")
    server = _graceful_server_class()(config)
    print(f"bitnn-run serve: http://{args.host}:{args.port} models {', '.join(models)}"
          f"{' (API key required)' if api_key else ''}", file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        for m in models.values():
            m.close()
    return 0 if server.started else 1


def main(argv=None) -> int:
    """``python -m bitnn.serve ARGS`` = ``bitnn-run serve ARGS``."""
    p = argparse.ArgumentParser(prog="bitnn-run serve", description=add_parser.__doc__)
    configure_parser(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
