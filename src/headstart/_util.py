"""Small shared helpers: atomic writes, hashing, device and precision choice. torch is imported by the functions
that need it, so that the torch-free deployment (`headstart.runtime`) can write files atomically too."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def sha256_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def stable_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def atomic_write_bytes(path: Path, content: bytes) -> None:
    """Write a file so that readers see either the old file or the complete new one (write, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # as a plain open() would leave it (mkstemp makes it private)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(target: Path, kind: str) -> list[tuple[Path, int]]:
    """(path, pid) of sibling folders `.NAME.KIND-PID...` that an atomic save left behind."""
    found = []
    for p in target.parent.glob(f".{target.name}.{kind}-*"):
        pid = p.name.rsplit(f".{kind}-", 1)[1].split(".", 1)[0]
        if pid.isdigit():
            found.append((p, int(pid)))
    return found


def recover_directory(target: Path) -> None:
    """Finish or undo an atomic directory save that was killed (see `atomic_directory`).

    Killed after the old folder was moved aside but before the new one took its place, `target` is missing:
    the old folder is moved back. Leftovers of dead processes (an unfinished new folder, an old one not yet
    deleted) are removed. Folders of a save still running in another process are left alone.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    dead_old = sorted((p for p, pid in _leftovers(target, "old") if not _pid_alive(pid)), key=lambda p: p.name)
    if not target.exists() and dead_old:
        try:
            os.replace(dead_old.pop(), target)
        except FileNotFoundError:
            pass  # another process recovered it first
    for p, pid in _leftovers(target, "new"):
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
    for p in dead_old:
        shutil.rmtree(p, ignore_errors=True)


@contextmanager
def headstart_log_at(level: int) -> Iterator[None]:
    """headstart's log shows only messages at `level` or above inside the block (then its level before)."""
    logger = logging.getLogger("headstart")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `target`, on failure it is removed.

    Steps: write `.NAME.new-PID`; move `target` aside to `.NAME.old-PID`; move the new folder in; delete the
    old one. A kill at any step leaves either the old or the new folder readable: `recover_directory` (run by
    the next save and by loading) restores the old one if the kill came between the two moves.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-{os.getpid()}."))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            if old.exists():  # an earlier failed save of this process
                shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)  # put the previous folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_symlink(link: Path, points_to: str) -> None:
    """Make `link` a symbolic link to `points_to` (relative to the link's folder), replacing what was there."""
    link = Path(link)
    for stale in link.parent.glob(f".{link.name}.*.link"):  # left by a process killed in between
        pid = stale.name[len(link.name) + 2:-len(".link")]
        if pid.isdigit() and not _pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(points_to, tmp)
    os.replace(tmp, link)


def inside(base: Path, relative: str, what: str) -> Path:
    """`base / relative`, refused unless it stays inside `base` (a manifest must not point elsewhere)."""
    from .errors import ArtifactError

    base = Path(base).resolve()
    target = (base / str(relative)).resolve()
    if not target.is_relative_to(base):
        raise ArtifactError(f"{what} '{relative}' points outside {base}: the folder is damaged or was tampered with")
    return target


def check_writable(folder: Path, what: str) -> None:
    """Make `folder` and write (then remove) a probe file in it; a one-line HeadstartError naming `what` (the
    option, e.g. "--out report.html") when that fails, before any work. Hand-written because os.access answers
    yes to root on folders no one can write to (/proc, a read-only mount)."""
    from .errors import HeadstartError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".headstart-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise HeadstartError(f"{what}: cannot write to {folder} ({e.strerror or type(e).__name__}): choose a folder "
                             "you can write to") from None


def installed_versions(*packages: str) -> dict[str, str]:
    """Versions of those `packages` that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def library_versions() -> dict[str, str]:
    """Python and the versions of the libraries a saved file depends on, for its manifest."""
    import platform

    return {"python": platform.python_version(),
            **installed_versions("headstart", "torch", "timm", "transformers", "lightning", "safetensors")}


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_flags() -> set[str]:
    """The feature flags /proc/cpuinfo lists for this CPU (empty where it cannot be read: not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def cpu_bf16_kind() -> str | None:
    """How this CPU multiplies bfloat16 matrices natively: "amx" (AMX tiles, recent Intel Xeons), "avx512_bf16"
    (AVX512-BF16 without AMX, e.g. AMD EPYC Zen 4), or None (no native bfloat16: autocast would only emulate it)."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return None


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix support (AVX512-BF16 or AMX), where autocast pays off."""
    return cpu_bf16_kind() is not None


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced-precision dtype worth using on this device, or None for fp32."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def precision_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `--precision` choice (auto, fp32, bf16; fp16 as `auto` resolves on old GPUs) on
    this device, or None for fp32."""
    import torch

    return {"auto": autocast_dtype(device), "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


RESOLVED_PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """What a precision choice computes in on `device` for training: "fp32", "bf16" or "fp16", never "auto" (auto:
    bfloat16 where the device is fast at it, else fp32). What manifests, metrics and reports state."""
    import torch

    check_precision(precision)
    dtype = precision_dtype(precision, device)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def check_precision(precision: str) -> None:
    if precision not in ("auto", *RESOLVED_PRECISIONS):
        from .errors import SettingsError

        raise SettingsError(f"precision (--precision) must be one of auto, fp32, bf16, got {precision!r}")


# Inference on a CPU: the batch size from which `auto` computes in bfloat16, per kind of CPU (cpu_bf16_kind) and
# backbone family (its modality); below it, and for a family or CPU not listed, fp32. Measured side by side with
# benchmarks/precision_auto.py (RESULTS.md, "Issue 26"): on an AMX Xeon bfloat16 made one sentence 1.2x slower and
# 64 sentences 3x faster (autocast casts every weight on each call, which one item does not earn back), 64 clips
# 1.6x faster and one clip no faster, without changing a prediction; images are left in fp32 everywhere: with
# efficientnet_lite0 bfloat16 flipped 5% of the predictions and cost a point of accuracy (0.8 on AMD in Issue 3)
# for at most 1.2x at 64 images and nothing at one. Without AMX (AVX512-BF16 alone, AMD EPYC) bfloat16 was
# measured faster on full batches of text and audio (Issue 3 and Issue 10 tables), so smaller ones stay fp32.
AUTO_BF16_FROM_BATCH: dict[str, dict[str, int]] = {
    "amx": {"text": 64, "audio": 64},
    "avx512_bf16": {"text": 64, "audio": 64},
}


def auto_bf16_from_batch(device: torch.device, family: str) -> int | None:
    """The smallest batch at which `auto` runs `family` (a modality) in bfloat16 on this CPU; None: never."""
    if device.type != "cpu":
        return None
    return AUTO_BF16_FROM_BATCH.get(cpu_bf16_kind() or "", {}).get(family)


def inference_precision(precision: str, device: torch.device, family: str, batch_size: int) -> str:
    """What a precision choice computes in for inference (predict, evaluate, serve) of a `family` backbone (its
    modality) on batches of `batch_size` items: "fp32", "bf16" or "fp16", never "auto". On a GPU `auto` is what
    training uses (bfloat16, or fp16 on GPUs without it); on a CPU it follows AUTO_BF16_FROM_BATCH, so that it is
    never slower than fp32 where that was measured, and fp32 on CPUs without native bfloat16."""
    check_precision(precision)
    if precision != "auto" or device.type != "cpu":
        return resolve_precision(precision, device)
    from_batch = auto_bf16_from_batch(device, family)
    return "bf16" if from_batch is not None and batch_size >= from_batch else "fp32"


def describe_auto(device: torch.device, family: str) -> str:
    """What `auto` computes in for inference of `family` on `device`, in words (for metadata and logs)."""
    if device.type != "cpu":
        return resolve_precision("auto", device)
    from_batch = auto_bf16_from_batch(device, family)
    if from_batch is None:
        return "fp32"
    return "bf16" if from_batch <= 1 else f"fp32 below {from_batch} items per batch, bf16 from {from_batch}"


def worker_count() -> int:
    """Data-loading workers: leave the model the cores it needs; on 2 cores one worker decodes."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, n - 1))
