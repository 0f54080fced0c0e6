"""Load test of `headstart serve` on 127.0.0.1: throughput and p50/p99 latency at concurrency 1, 8 and 32.

For each server configuration (torch without batching, torch with batching, ONNX Runtime without and with
batching, ONNX Runtime int8 with batching) the script starts `headstart serve` in a subprocess, waits for
/health, and runs a bounded asyncio client: `concurrency` workers, each sending one item per request
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
from _common import add_smoke_option, smoke_exported_model, start_smoke, table, write_results

CONFIGS = {
    "torch, no batching": ["--runtime", "torch", "--max-batch", "1"],
    "torch, batching": ["--runtime", "torch", "--max-batch", "32"],
    "onnx, no batching": ["--runtime", "onnx", "--max-batch", "1"],
    "onnx, batching": ["--runtime", "onnx", "--max-batch", "32"],
    "onnx int8, batching": ["--runtime", "onnx-int8", "--max-batch", "32"],
    "onnx, batching, no wait": ["--runtime", "onnx", "--max-batch", "32", "--max-wait-ms", "0"],
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


def start_server(model: Path, options: list[str], port: int, max_queue: int = 4096) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("headstart")
    proc = subprocess.Popen([str(exe), "serve", str(model), "--port", str(port), "--max-queue", str(max_queue),
                             *options],
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


def raw_request(payload: dict) -> bytes:
    """The bytes of one POST /predict (httpx builds the JSON or multipart body and the headers)."""
    request = httpx.Request("POST", "http://127.0.0.1/predict", **payload)
    body = request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
    lines = ["POST /predict HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def run_level(port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict:
    """`concurrency` workers, one keep-alive connection each, send requests back to back; latencies of those sent
    after the warm-up second.

    Hand-written HTTP/1.1 over asyncio streams rather than httpx.AsyncClient: httpx's connection pool itself slows
    down past a few concurrent connections (GET /health on a bare FastAPI app, this machine: httpx 422 -> 99 req/s
    from concurrency 1 to 32, raw asyncio streams 876 -> 1,342), which would measure the client, not the server.
    """
    latencies: list[float] = []
    statuses: Counter = Counter()
    start = time.perf_counter()
    warm, stop = start + 1.0, start + 1.0 + seconds

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                try:
                    status: int | str = await asyncio.wait_for(_exchange(reader, writer, requests[i % len(requests)]), 60)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
                    status = type(e).__name__
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                i += concurrency
                if sent >= warm:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(time.perf_counter() - sent)
        finally:
            writer.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    latencies.sort()
    ok = len(latencies)
    return {"concurrency": concurrency, "requests": sum(statuses.values()), "ok": ok,
            "throughput_rps": ok / seconds,
            "p50_ms": 1000 * statistics.median(latencies) if ok else float("nan"),
            "p99_ms": 1000 * latencies[min(ok - 1, int(0.99 * ok))] if ok else float("nan"),
            "errors": {str(k): v for k, v in statuses.items() if k != 200}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", help="the model folder (RUN/model); not with --smoke")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--texts", help="CSV with a text column (one sentence per request)")
    source.add_argument("--images", help="folder of .jpg/.png images (one image per request)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--overload", action="store_true",
                        help="also run past capacity: the first config with --max-queue 8 at concurrency 64 (503s expected)")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # a smallcnn served by torch and by ONNX Runtime int8, half a second per level
        args.model = smoke_exported_model(start_smoke())
        args.images, args.texts = str(args.model.parent.parent / "images"), None
        args.seconds, args.levels, args.configs = 0.5, [1, 4], ["torch, batching", "onnx int8, batching"]
    elif args.model is None or not (args.texts or args.images):
        parser.error("the model folder and one of --texts or --images are required (or --smoke)")
    payloads = _payloads(args)
    requests = [raw_request(p) for p in payloads]
    rows = []
    plan = [(name, CONFIGS[name], 4096, args.levels) for name in args.configs]
    if args.overload:
        plan.append((f"{args.configs[0]}, queue 8 (overload)", CONFIGS[args.configs[0]], 8, [64]))
    for name, options, max_queue, levels in plan:
        port = _free_port()
        proc = start_server(args.model, options, port, max_queue)
        try:
            warm_up(port, payloads)
            for level in levels:
                row = {"server": name, **asyncio.run(run_level(port, requests, level, args.seconds))}
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
