"""Load test of `headstart serve` on 127.0.0.1: throughput and p50/p99 latency at concurrency 1, 8 and 32.

For each server configuration (torch without batching, torch with batching, ONNX Runtime without and with
batching, ONNX Runtime int8 with batching) the script starts `headstart serve` in a subprocess, waits for
/health, and runs a bounded asyncio/httpx client: `concurrency` workers, each sending one item per request
(an SST-2 dev sentence, or a CIFAR-10 image file) back to back for `--seconds` seconds (after a 1 s warm-up).
Every status code is counted: a 5xx or a client error (timeout, refused) is reported, never hidden. The server
is stopped with SIGTERM and the script waits for it to exit. Client and server share the machine's cores.

    python benchmarks/serve_load.py runs/sst2-ft/model --texts ../shared/datasets/text/sst2/dev.csv
    python benchmarks/serve_load.py runs/c10-lite0/model --images ../shared/datasets/images/cifar10/train
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

CONFIGS = {
    "torch, no batching": ["--runtime", "torch", "--max-batch", "1"],
    "torch, batching": ["--runtime", "torch", "--max-batch", "32"],
    "onnx, no batching": ["--runtime", "onnx", "--max-batch", "1"],
    "onnx, batching": ["--runtime", "onnx", "--max-batch", "32"],
    "onnx int8, batching": ["--runtime", "onnx-int8", "--max-batch", "32"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _payloads(args) -> list[dict]:
    if args.texts:
        import pandas as pd

        texts = pd.read_csv(args.texts)["text"].astype(str).tolist()
        return [{"json": {"inputs": [t]}} for t in texts]
    files = sorted(f for f in Path(args.images).rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(files)
    return [{"files": [("files", (f.name, f.read_bytes(), "application/octet-stream"))]} for f in files[:500]]


def start_server(model: Path, options: list[str], port: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("headstart")
    proc = subprocess.Popen([str(exe), "serve", str(model), "--port", str(port), "--max-queue", "4096", *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HEADSTART_PROGRESS": "0"})
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start in 180 s")


def warm_up(port: int, payloads: list[dict], n: int = 20) -> None:
    """First requests pay one-off costs (BatchNorm folding, lazy imports, allocator growth): not measured."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        for payload in payloads[:n]:
            client.post("/predict", **payload).raise_for_status()


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run_level(port: int, payloads: list[dict], concurrency: int, seconds: float) -> dict:
    """`concurrency` workers send requests back to back; latencies of those sent after the warm-up second."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    start = time.perf_counter()
    warm, stop = start + 1.0, start + 1.0 + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        i = k
        while time.perf_counter() < stop:
            payload = payloads[i % len(payloads)]
            i += concurrency
            sent = time.perf_counter()
            try:
                response = await client.post("/predict", **payload)
                status: int | str = response.status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            if sent >= warm:
                statuses[status] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - sent)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(k, client) for k in range(concurrency)))
    latencies.sort()
    ok = len(latencies)
    return {"concurrency": concurrency, "requests": sum(statuses.values()), "ok": ok,
            "throughput_rps": ok / seconds,
            "p50_ms": 1000 * statistics.median(latencies) if ok else float("nan"),
            "p99_ms": 1000 * latencies[min(ok - 1, int(0.99 * ok))] if ok else float("nan"),
            "errors": {str(k): v for k, v in statuses.items() if k != 200}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--texts", help="CSV with a text column (one sentence per request)")
    source.add_argument("--images", help="folder of .jpg/.png images (one image per request)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    payloads = _payloads(args)
    rows = []
    for name in args.configs:
        port = _free_port()
        proc = start_server(args.model, CONFIGS[name], port)
        try:
            warm_up(port, payloads)
            for level in args.levels:
                row = {"server": name, **asyncio.run(run_level(port, payloads, level, args.seconds))}
                print(f"{name} c={level}: {row['throughput_rps']:.1f} req/s, p50 {row['p50_ms']:.1f} ms, "
                      f"p99 {row['p99_ms']:.1f} ms, errors {row['errors']}", flush=True)
                rows.append(row)
        finally:
            stop_server(proc)
    print()
    print(table(rows, ["server", "concurrency", "requests", "throughput_rps", "p50_ms", "p99_ms", "errors"]))
    write_results(f"serve_load_{args.model.parent.name}", {"model": str(args.model), "seconds": args.seconds,
                                                          "rows": rows})


if __name__ == "__main__":
    main()
