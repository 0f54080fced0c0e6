"""Load test of `headstart serve` on 127.0.0.1: throughput, p50/p99 latency, errors and the server's CPU time per
request at concurrency 1, 8 and 32.

For each server configuration (torch without batching, torch with batching, ONNX Runtime without and with
batching, ONNX Runtime int8 with batching) the script starts `headstart serve` in a subprocess, waits for
/health, and runs a closed-loop client: `concurrency` keep-alive connections, each sending one item per request
back to back for `--seconds` seconds after a 1 s warm-up. The request mix is fixed: `--texts` SST-2 dev sentences
("short"), `--mixes long` the same sentences joined into texts of at least 128 tokens ("long"), or `--images` files.
The client is `wrk` (a compiled load generator, one thread: `apt-get install wrk`) when it is on the PATH, else a
hand-written asyncio client pinned to the last core (`--client` chooses). Every status code is counted: a non-200
or a client error (timeout, refused) is reported, never hidden. Beside each row: the server process's CPU
milliseconds per answered request (less sensitive to other load on the machine than req/s) and the load average.
`--baseline-src OLD/src` runs every configuration also with another checkout's source, served the way it was
before issue 27 (asyncio event loop and h11 parser: uvloop and httptools hidden), side by side.

    python benchmarks/serve_load.py runs/sst2-probe/model --texts ../shared/datasets/text/sst2/dev.csv --mixes short long
    python benchmarks/serve_load.py runs/c10-lite0/model --images ../shared/datasets/images/cifar10/train
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
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
    "onnx int8, batching, 1 thread": ["--runtime", "onnx-int8", "--max-batch", "32", "--threads", "1"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _payloads(args, long: bool = False) -> list[dict]:
    if args.texts:
        import pandas as pd

        texts = pd.read_csv(args.texts)["text"].astype(str).tolist()
        return [{"json": {"inputs": [t]}} for t in (long_texts(texts) if long else texts)]
    files = sorted(f for f in Path(args.images).rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(files)
    return [{"files": [("files", (f.name, f.read_bytes(), "application/octet-stream"))]} for f in files[:500]]


def long_texts(sentences: list[str], words: int = 110) -> list[str]:
    """Texts of at least `words` words (over 128 word pieces, the model's limit): consecutive sentences joined."""
    texts, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= words:
            texts.append(" ".join(current))
            current = []
    return texts


# How the baseline server runs: another checkout's source, with uvloop and httptools hidden (as it served before).
BASELINE_LAUNCH = ("import sys; sys.modules['uvloop'] = sys.modules['httptools'] = None; "
                   "from headstart.cli import main; sys.argv[0] = 'headstart'; main()")


def start_server(model: Path, options: list[str], port: int, max_queue: int = 4096,
                 baseline_src: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "HEADSTART_PROGRESS": "0"}
    command = [str(Path(sys.executable).with_name("headstart"))]
    if baseline_src is not None:
        command = [sys.executable, "-c", BASELINE_LAUNCH]
        env["PYTHONPATH"] = str(baseline_src)
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open while the server runs; not a pipe, which its log would fill)
    proc = subprocess.Popen([*command, "serve", str(model), "--port", str(port), "--max-queue", str(max_queue),
                             *options], stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server exited: {log.read().decode()[-2000:]}")
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


async def run_level(port: int, requests: list[bytes], concurrency: int, seconds: float, warm_s: float = 1.0) -> dict:
    """`concurrency` workers, one keep-alive connection each, send requests back to back; latencies of those sent
    after the `warm_s` warm-up.

    Hand-written HTTP/1.1 over asyncio streams rather than httpx.AsyncClient: httpx's connection pool itself slows
    down past a few concurrent connections (GET /health on a bare FastAPI app, this machine: httpx 422 -> 99 req/s
    from concurrency 1 to 32, raw asyncio streams 876 -> 1,342), which would measure the client, not the server.
    """
    latencies: list[float] = []
    statuses: Counter = Counter()
    start = time.perf_counter()
    warm, stop = start + warm_s, start + warm_s + seconds

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
            "throughput_rps": ok / seconds if seconds else float("nan"),
            "p50_ms": 1000 * statistics.median(latencies) if ok else float("nan"),
            "p99_ms": 1000 * latencies[min(ok - 1, int(0.99 * ok))] if ok else float("nan"),
            "errors": {str(k): v for k, v in statuses.items() if k != 200}}


WRK_SCRIPT = """
local requests, i = {}, 0
for k = 0, tonumber(os.getenv("REQUESTS")) - 1 do
  local f = io.open(os.getenv("FOLDER") .. "/" .. k, "rb"); requests[k + 1] = f:read("*a"); f:close()
end
request = function() i = i + 1; return requests[(i % #requests) + 1] end
done = function(summary, latency)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %f, "status": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "p50_ms": %f, "p99_ms": %f}\\n', summary.requests, summary.duration / 1e6, e.status, e.connect,
    e.read, e.write, e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def run_wrk(port: int, folder: Path, count: int, concurrency: int, seconds: float) -> dict:
    """One wrk run (one thread, `concurrency` connections) over the raw requests saved in `folder`: its summary.
    wrk counts an answer of status 400 or more as an error of kind "status"; its latencies are of all answers."""
    result = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
                             "-s", str(folder / "script.lua"), f"http://127.0.0.1:{port}"],
                            capture_output=True, text=True, env={**os.environ, "FOLDER": str(folder), "REQUESTS": str(count)})
    if result.returncode != 0:
        raise SystemExit(f"wrk failed: {result.stderr[-2000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    errors = {kind: summary[kind] for kind in ("status", "connect", "read", "write", "timeout") if summary[kind]}
    ok = summary["requests"] - summary["status"]
    answered = summary["requests"] > 0  # else wrk's percentiles are 0, not a latency: none came back in time
    return {"concurrency": concurrency, "requests": summary["requests"], "ok": ok,
            "throughput_rps": ok / summary["seconds"], "p50_ms": summary["p50_ms"] if answered else float("nan"),
            "p99_ms": summary["p99_ms"] if answered else float("nan"), "errors": errors}


def save_for_wrk(requests: list[bytes]) -> Path:
    """The raw requests as files 0, 1, ... and the Lua script that sends them in turn, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="headstart-serve-load-"))
    for k, request in enumerate(requests):
        (folder / str(k)).write_bytes(request)
    (folder / "script.lua").write_text(WRK_SCRIPT)
    return folder


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(proc: subprocess.Popen, port: int, requests: list[bytes], wrk_folder: Path | None, level: int,
            seconds: float) -> dict:
    """One concurrency level: a second of warm-up, then `seconds` measured; with the server's CPU ms per answer."""
    if wrk_folder is not None:
        run_wrk(port, wrk_folder, len(requests), level, 1)
        before = cpu_seconds(proc.pid)
        row = run_wrk(port, wrk_folder, len(requests), level, seconds)
    else:  # the asyncio client, pinned to the last core
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(cores)})
        try:
            asyncio.run(run_level(port, requests, level, 0))
            before = cpu_seconds(proc.pid)
            row = asyncio.run(run_level(port, requests, level, seconds, warm_s=0))
        finally:
            os.sched_setaffinity(0, cores)
    spent = cpu_seconds(proc.pid) - before
    per_request = 1000 * spent / row["requests"] if row["requests"] else float("nan")
    return {**row, "server_cpu_ms": per_request, "load": round(os.getloadavg()[0], 1)}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", help="the model folder (RUN/model); not with --smoke")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--texts", help="CSV with a text column (one sentence per request)")
    source.add_argument("--images", help="folder of .jpg/.png images (one image per request)")
    parser.add_argument("--mixes", nargs="+", choices=["short", "long"], default=["short"],
                        help="with --texts: the sentences (short), texts of 128 tokens and more (long), or both")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                        help="wrk when installed (auto), or the asyncio client pinned to one core")
    parser.add_argument("--baseline-src", type=Path,
                        help="also serve from this source folder (an older checkout's src), as served before issue 27")
    parser.add_argument("--overload", action="store_true",
                        help="also run past capacity: the first config with --max-queue 8 at concurrency 64 (503s expected)")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # a smallcnn served by torch and by ONNX Runtime int8, one second per level
        args.model = smoke_exported_model(start_smoke())
        args.images, args.texts = str(args.model.parent.parent / "images"), None
        args.seconds, args.levels, args.configs = 1, [1, 4], ["torch, batching", "onnx int8, batching"]
    elif args.model is None or not (args.texts or args.images):
        parser.error("the model folder and one of --texts or --images are required (or --smoke)")
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "python"
    return args


def _plan(args) -> list[tuple[str, list[str], int, list[int], Path | None]]:
    """(name, server options, max queue, levels, baseline source or None) per server to start, old beside new."""
    versions = [("", None)] + ([(" [before]", args.baseline_src)] if args.baseline_src else [])
    plan = [(name + tag, CONFIGS[name], 4096, args.levels, src) for name in args.configs for tag, src in versions[::-1]]
    if args.overload:
        plan.append((f"{args.configs[0]}, queue 8 (overload)", CONFIGS[args.configs[0]], 8, [64], None))
    return plan


def main() -> None:
    args = _arguments()
    mixes = ({mix: _payloads(args, long=mix == "long") for mix in args.mixes} if args.texts
             else {"images": _payloads(args)})
    rows = []
    for mix, payloads in mixes.items():
        requests = [raw_request(p) for p in payloads]
        wrk_folder = save_for_wrk(requests) if args.client == "wrk" else None
        for name, options, max_queue, levels, src in _plan(args):
            port = _free_port()
            proc = start_server(args.model, options, port, max_queue, src)
            try:
                warm_up(port, payloads)
                for level in levels:
                    row = {"server": name, "mix": mix, **measure(proc, port, requests, wrk_folder, level, args.seconds)}
                    print(f"{name}, {mix} c={level}: {row['throughput_rps']:.1f} req/s, p50 {row['p50_ms']:.1f} ms, "
                          f"p99 {row['p99_ms']:.1f} ms, server {row['server_cpu_ms']:.2f} CPU ms/request, "
                          f"errors {row['errors']}, load {row['load']}", flush=True)
                    rows.append(row)
            finally:
                stop_server(proc)
        if wrk_folder is not None:
            shutil.rmtree(wrk_folder)
    print()
    print(table(rows, ["server", "mix", "concurrency", "requests", "throughput_rps", "p50_ms", "p99_ms", "errors",
                       "server_cpu_ms", "load"]))
    write_results(f"serve_load_{args.model.parent.name}", {"model": str(args.model), "seconds": args.seconds,
                                                          "client": args.client, "rows": rows})


if __name__ == "__main__":
    main()
