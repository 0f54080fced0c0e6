"""Model folders shipped as one zip split over several PyPI packages (PyPI limits a file's size).

The parts are read where pip installed them (found through the packages' metadata, never by importing them),
joined in order while hashing, checked against the SHA-256 the release is pinned to, and unpacked once into
headstart's cache (`$HEADSTART_CACHE/models/NAME-HASH`, atomically: a killed unpack leaves nothing half-written).
Later loads find the unpacked folder and touch none of the parts.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._util import atomic_directory, recover_directory
from ..errors import BackboneError

log = logging.getLogger("headstart")


@dataclass(frozen=True)
class SplitZip:
    """A zip of a model folder split over `packages`; `files[i]` is the part inside `packages[i]`."""

    name: str  # the unpacked folder's name, e.g. "all-mpnet-base-v2"
    packages: Sequence[str]
    files: Sequence[str]
    sha256: str  # of the joined zip
    folder_in_zip: str  # the zip member folder holding the model files
    skip: frozenset[str] = frozenset({"desktop.ini", "README.md"})

    def target(self) -> Path:
        root = Path(os.environ.get("HEADSTART_CACHE", Path.home() / ".cache" / "headstart"))
        return root / "models" / f"{self.name}-{self.sha256[:12]}"

    def part_paths(self) -> list[Path] | None:
        """The installed parts, in order, or None when a package is missing."""
        paths = []
        for package, file in zip(self.packages, self.files):
            try:
                path = Path(importlib.metadata.distribution(package).locate_file(file))
            except importlib.metadata.PackageNotFoundError:
                return None
            if not path.is_file():
                return None
            paths.append(path)
        return paths

    def is_available(self) -> bool:
        return (self.target() / "config.json").is_file() or self.part_paths() is not None

    def install_hint(self) -> str:
        return f"pip install {' '.join(self.packages)}  (or pip install 'headstart[mpnet]')"

    def folder(self) -> Path:
        """The unpacked model folder, unpacking it first if this is the first use."""
        target = self.target()
        recover_directory(target)
        if (target / "config.json").is_file():
            return target
        parts = self.part_paths()
        if parts is None:
            raise BackboneError(f"the {self.name} weights are not installed: {self.install_hint()}")
        log.info("%s: joining %d parts and unpacking once into %s", self.name, len(parts), target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{self.name}.zip-") as tmp:
            joined = Path(tmp) / f"{self.name}.zip"
            digest = join_parts(parts, joined)
            if digest != self.sha256:
                raise BackboneError(f"the {self.name} parts joined to a zip with SHA-256 {digest[:16]}..., not the "
                                    f"pinned {self.sha256[:16]}...: reinstall them ({self.install_hint()})")
            with atomic_directory(target) as out:
                self._unpack(joined, out)
        return target

    def _unpack(self, zip_file: Path, out: Path) -> None:
        prefix = self.folder_in_zip.rstrip("/") + "/"
        with zipfile.ZipFile(zip_file) as archive:
            for member in archive.infolist():
                relative = member.filename[len(prefix):] if member.filename.startswith(prefix) else ""
                if not relative or member.is_dir() or Path(relative).name in self.skip:
                    continue
                destination = (out / relative).resolve()
                if out.resolve() not in destination.parents:  # a member named ../x: never write outside
                    raise BackboneError(f"{zip_file}: member {member.filename!r} points outside the model folder")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)  # the zip checks each member's CRC as it reads


def join_parts(parts: Sequence[Path], joined: Path) -> str:
    """Concatenate `parts` into `joined` in 1 MiB chunks; returns the SHA-256 of the result."""
    digest = hashlib.sha256()
    with open(joined, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    sink.write(chunk)
    return digest.hexdigest()
