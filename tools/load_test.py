#!/usr/bin/env python3
"""A bounded load test of ``bitnn-run serve`` over loopback.

CLIENTS concurrent clients each send REQUESTS requests one after another
(completions, classify or both alternately) and the tool prints the
latency p50/p99, the throughput and the number of failed requests. Exit
status 1 if any request failed.

    python3 -m tools.load_test --start-server              # starts its own server on a free port
    python3 -m tools.load_test --url http://127.0.0.1:8080 --clients 32 --requests 20

Only loopback addresses are accepted (the tool is not for loading other
people's servers). Needs httpx (installed with the serve extra's tests).
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_server(port: int, extra=(), env=None):
    """`python -m bitnn.serve` on 127.0.0.1:port in its own process group."""
    cmd = [sys.executable, "-m", "bitnn.serve", "--port", str(port), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def wait_ready(url: str, proc, timeout: float = 60.0) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): "
                               f"{proc.stderr.read().decode(errors='replace')}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not answer /health within {timeout:.0f} s")


def stop_server(proc, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


async def run_load(url, clients, requests, mode, max_tokens, api_key, timeout):
    import httpx

    sample = (ROOT / "bitnn" / "models" / "samples" / "ankle-boot.png").read_bytes()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    latencies, failures, tokens = [], [], 0

    async def one(client, i):
        nonlocal tokens
        kind = mode if mode != "mixed" else ("completions" if i % 2 == 0 else "classify")
        t0 = time.perf_counter()
        try:
            if kind == "completions":
                r = await client.post(url + "/v1/completions", json={
                    "model": "shakespeare", "prompt": "ROMEO:", "max_tokens": max_tokens,
                    "temperature": 0.8, "seed": i})
            else:
                r = await client.post(url + "/v1/classify", data={"model": "fashion", "top_k": "3"},
                                      files={"file": ("boot.png", sample, "image/png")})
            if r.status_code != 200:
                failures.append(f"{kind}: HTTP {r.status_code} {r.text[:200]}")
                return
            if kind == "completions":
                tokens += r.json()["usage"]["completion_tokens"]
            latencies.append(time.perf_counter() - t0)
        except httpx.HTTPError as e:
            failures.append(f"{kind}: {type(e).__name__}: {e}")

    async def client_loop(c):
        async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
            for k in range(requests):
                await one(client, c * requests + k)

    t0 = time.perf_counter()
    await asyncio.gather(*(client_loop(c) for c in range(clients)))
    return time.perf_counter() - t0, latencies, failures, tokens


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="the server (loopback only), e.g. http://127.0.0.1:8080")
    p.add_argument("--start-server", action="store_true",
                   help="start `bitnn-run serve` on a free loopback port for the test")
    p.add_argument("--server-args", default="",
                   help="extra options for the started server, e.g. '--slots 2 -t 1'")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--mode", choices=["completions", "classify", "mixed"], default="mixed")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per completion")
    p.add_argument("--api-key", default=os.environ.get("BITNN_API_KEY"))
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 256 and 1 <= args.requests <= 1000):
        p.error("--clients must be 1..256 and --requests 1..1000")
    if args.start_server == (args.url is not None):
        p.error("give --url or --start-server (one of them)")
    proc = None
    if args.start_server:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        extra = ["-m", "shakespeare", "-m", "fashion",
                 "--max-queue", str(args.clients * 2), *args.server_args.split()]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if args.api_key:
            env["BITNN_API_KEY"] = args.api_key
        proc = start_server(port, extra, env)
    else:
        url = args.url.rstrip("/")
        if not is_loopback(url):
            p.error(f"{url} is not a loopback address")
    try:
        wait_ready(url, proc)
        wall, lat, failures, tokens = asyncio.run(run_load(
            url, args.clients, args.requests, args.mode, args.max_tokens, args.api_key,
            args.timeout))
    finally:
        if proc is not None:
            stop_server(proc)
    total = args.clients * args.requests
    result = {"clients": args.clients, "requests": total, "failed": len(failures),
              "mode": args.mode, "max_tokens": args.max_tokens,
              "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
              "requests_per_s": len(lat) / wall, "tokens_per_s": tokens / wall,
              "wall_s": wall, "machine": f"{platform.processor() or platform.machine()}, "
                                         f"{os.cpu_count()} CPUs"}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{total} requests ({args.clients} clients x {args.requests}, {args.mode}): "
              f"failed {len(failures)}; latency p50 {result['p50_ms']:.1f} ms, "
              f"p99 {result['p99_ms']:.1f} ms; {result['requests_per_s']:.1f} requests/s, "
              f"{result['tokens_per_s']:.0f} generated tokens/s; wall {wall:.1f} s")
    for f in failures[:10]:
        print("failed:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
