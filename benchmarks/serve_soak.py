"""Soak test of `headstart serve` on 127.0.0.1: mixed good and bad requests for a minute, and the server's memory.

The server (a fresh `headstart serve` subprocess, an image model) takes `--concurrency` clients sending back to
back for `--seconds` seconds, each request drawn (seeded) from a mix of good uploads (a small PNG, a 4-megapixel
PNG, both together) and bad ones: decompression bombs (a 140 kB PNG of 12000 x 12000 pixels, six in one request),
a request whose images decode to more than --max-decoded-mb together, a truncated JPEG, text named .jpg, an
empty file, an hour of audio sent as an image, a malformed multipart body, JSON to an image model, and more
files than --max-items. It checks what issue 21 asks: every good request 200, every bad one 4xx (never a 5xx, a
timeout or a dropped connection), and the server's resident memory at the end within 10% of where it was after
the warm-up. The table and the JSON (benchmarks/out/serve_soak.json, with the git commit) give the counts by kind
and the memory at start, peak and end.

    python benchmarks/serve_soak.py                 # builds a small smallcnn image model in a temporary folder
    python benchmarks/serve_soak.py RUN/model --seconds 60 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import add_smoke_option, start_smoke, table, write_results
from serve_load import _exchange, _free_port, raw_request, start_server, stop_server
from tests._memory import flac_of_silence, png_of_black

MAX_DECODED_MB = 64  # the server's per-request limit here: five 4-megapixel PNGs (12 MB each as RGB) pass it, eight do not


def _png(size: tuple[int, int]) -> bytes:
    """A colour gradient: decodes to size x 3 bytes, compresses well (the bodies stay under the body limit)."""
    y, x = np.indices((size[1], size[0]))
    pixels = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _files(*named: tuple[str, bytes]) -> dict:
    return {"files": [("files", (name, data, "application/octet-stream")) for name, data in named]}


def traffic() -> dict[str, tuple[bool, bytes]]:
    """kind -> (good?, the raw HTTP request)."""
    small, photo, bomb = _png((32, 32)), _png((2000, 2000)), png_of_black(12000, 12000)
    kinds = {
        "good: small png": (True, _files(("a.png", small))),
        "good: 4-megapixel png": (True, _files(("photo.png", photo))),
        "good: three together": (True, _files(("a.png", small), ("photo.png", photo), ("b.png", small))),
        "bad: 12000x12000 png": (False, _files(("bomb.png", bomb))),
        "bad: six bombs": (False, _files(*[(f"bomb{i}.png", bomb) for i in range(6)])),
        "bad: decodes past the request limit": (False, _files(*[(f"p{i}.png", photo) for i in range(8)])),
        "bad: truncated jpeg": (False, _files(("cut.jpg", _jpeg()[:300]))),
        "bad: text as .jpg": (False, _files(("notes.jpg", b"just some text"))),
        "bad: empty file": (False, _files(("empty.png", b""))),
        "bad: an hour of audio as an image": (False, _files(("hour.png", flac_of_silence(3600)))),
        "bad: too many files": (False, _files(*[(f"{i}.png", small) for i in range(65)])),
        "bad: malformed multipart": (False, {"content": b"--x\r\nnot a real part",
                                             "headers": {"content-type": "multipart/form-data; boundary=x"}}),
        "bad: json to an image model": (False, {"content": b"[" * 100_000 + b"]" * 100_000,
                                                "headers": {"content-type": "application/json"}}),
    }
    return {kind: (good, raw_request(payload)) for kind, (good, payload) in kinds.items()}


def resident_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


async def soak(port: int, requests: dict[str, tuple[bool, bytes]], concurrency: int, seconds: float,
               pid: int, seed: int = 0) -> tuple[dict[str, Counter], list[float]]:
    """Workers on keep-alive connections send randomly drawn kinds until `seconds` have passed; statuses by kind,
    and the server's resident memory sampled every second."""
    statuses: dict[str, Counter] = {kind: Counter() for kind in requests}
    samples: list[float] = []
    stop = time.perf_counter() + seconds
    kinds = list(requests)

    async def worker(k: int) -> None:
        draw = random.Random(seed * 1000 + k)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                kind = draw.choice(kinds)
                for _attempt in (1, 2):  # a keep-alive connection the server closed after the last answer: retry once
                    try:
                        status: int | str = await asyncio.wait_for(_exchange(reader, writer, requests[kind][1]), 120)
                        break
                    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, StopIteration) as e:
                        status = type(e).__name__
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                statuses[kind][status] += 1
        finally:
            writer.close()

    async def sampler() -> None:
        while time.perf_counter() < stop:
            samples.append(resident_mb(pid))
            await asyncio.sleep(1.0)

    await asyncio.gather(sampler(), *(worker(k) for k in range(concurrency)))
    return statuses, samples


def small_image_model(folder: Path) -> Path:
    """smallcnn fine-tuned for an epoch on 40 synthetic 24x24 images: a model to serve, made in seconds."""
    import headstart

    rng = np.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (folder / "images" / label).mkdir(parents=True)
        for i in range(20):
            noise = rng.integers(-20, 20, (24, 24, 3))
            Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(
                folder / "images" / label / f"{i}.png")
    headstart.fit(folder / "images", "smallcnn", "finetune", out=folder / "run", epochs=1, cache=False)
    return folder / "run" / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", help="an image model folder (default: build a small one)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runtime", default="torch")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # every kind of request once in the warm-up, then a second of one client; memory not judged
        start_smoke()
        args.seconds, args.concurrency = 1.0, 1
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or small_image_model(Path(tmp))
        requests = traffic()
        port = _free_port()
        proc = start_server(model, ["--runtime", args.runtime, "--max-decoded-mb", str(MAX_DECODED_MB)], port)
        try:
            for kind in requests:  # warm-up: every kind once (first-call costs, allocator growth)
                asyncio.run(_once(port, requests[kind][1]))
            time.sleep(1.0)
            start_mb = resident_mb(proc.pid)
            statuses, samples = asyncio.run(soak(port, requests, args.concurrency, args.seconds, proc.pid))
            time.sleep(2.0)  # requests finished: let the server settle
            end_mb, peak_mb = resident_mb(proc.pid), resident_mb(proc.pid, "VmHWM")
        finally:
            stop_server(proc)
    rows, failures = [], []
    for kind, (good, _) in requests.items():
        counts = statuses[kind]
        wrong = {str(s): n for s, n in counts.items() if (s != 200 if good else not (isinstance(s, int) and
                                                                                     400 <= s < 500))}
        failures += [f"{kind}: {wrong}"] if wrong else []
        rows.append({"kind": kind, "requests": sum(counts.values()),
                     "statuses": ", ".join(f"{n} x {s}" for s, n in sorted(counts.items(), key=str)),
                     "as expected": "yes" if not wrong else f"NO {wrong}"})
    change = (end_mb - start_mb) / start_mb
    memory = {"start_mb": round(start_mb, 1), "end_mb": round(end_mb, 1), "peak_mb": round(peak_mb, 1),
              "max_sampled_mb": round(max(samples, default=start_mb), 1), "change": round(change, 4)}
    print(table(rows, ["kind", "requests", "statuses", "as expected"]))
    print(f"\nserver resident memory: {start_mb:.0f} MB after warm-up, {max(samples, default=0):.0f} MB at most "
          f"while sampled, {end_mb:.0f} MB at the end ({change:+.1%}); peak {peak_mb:.0f} MB")
    ok = not failures and (abs(change) <= 0.10 or args.smoke)  # a second says nothing about memory growth
    print("PASS" if ok else "FAIL: " + "; ".join(failures or [f"memory changed by {change:+.1%}"]))
    write_results("serve_soak", {"commit": commit, "model": str(args.model or "built: smallcnn, 40 images, 1 epoch"),
                                 "runtime": args.runtime, "seconds": args.seconds, "concurrency": args.concurrency,
                                 "rows": rows, "memory": memory, "passed": ok})
    raise SystemExit(0 if ok else 1)


async def _once(port: int, request: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(_exchange(reader, writer, request), 120)
    except (OSError, asyncio.IncompleteReadError, StopIteration):
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    main()
