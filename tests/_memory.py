"""Memory ceilings for tests: run code in a fresh Python process and measure how far its resident memory rose.

Hand-written because pytest has no memory assertions and `resource.setrlimit(RLIMIT_AS)` limits address space,
which torch and thread stacks reserve by the gigabyte without touching it. The child resets its peak resident
size (writing 5 to /proc/self/clear_refs) after `setup`, runs `action`, and reports VmHWM minus the resident
size before it: the growth the action caused at its peak, whatever the speed of the machine.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

_CHILD = '''
import json, re
def _status(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1)) / 1024
{setup}
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
_before = _status("VmRSS")
{action}
print("@@" + json.dumps({{"growth_mb": _status("VmHWM") - _before, "result": result}}))
'''


def peak_growth_mb(setup: str, action: str) -> tuple[float, object]:
    """(MB the resident memory rose at its peak while `action` ran, `result` as the action set it) in a child
    process; `setup` runs first, unmeasured. Both are Python source; `action` must assign `result` (JSON)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure peak memory")
    code = _CHILD.format(setup=textwrap.dedent(setup), action=textwrap.dedent(action))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line[2:] for line in done.stdout.splitlines() if line.startswith("@@")))
    return report["growth_mb"], report["result"]


def png_of_black(width: int, height: int) -> bytes:
    """A real grayscale PNG of `width` x `height` black pixels, made row block by row block (never whole in
    memory): 12000 x 12000 is a 140 kB file that decodes to 144 MB (432 MB as RGB)."""
    compressor = zlib.compressobj(9)
    rows = 64
    block = bytes((width + 1) * rows)  # each row: filter byte 0, then the pixels
    parts = [compressor.compress(block) for _ in range(height // rows)]
    parts += [compressor.compress(bytes((width + 1) * (height % rows))), compressor.flush()]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def flac_of_silence(seconds: int, rate: int = 8000, channels: int = 1) -> bytes:
    """A FLAC file of silence, written a minute at a time: an hour at 8 kHz is about 90 kB."""
    import io

    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    minute = np.zeros((rate * 60, channels), np.int16)
    with soundfile.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds // 60):
            f.write(minute)
        f.write(minute[: rate * (seconds % 60)])
    return buffer.getvalue()
