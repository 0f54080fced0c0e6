"""Model folders shipped as a zip split over PyPI packages (mpnet): join, verify, unpack once."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from headstart.backbones.hf_text import MPNET
from headstart.backbones.split_zip import SplitZip
from headstart.errors import BackboneError


def _split_zip(tmp_path: Path, members: dict[str, bytes], parts: int = 3) -> tuple[list[Path], str]:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    data = archive.read_bytes()
    size = -(-len(data) // parts)
    paths = []
    for i in range(parts):
        path = tmp_path / f"model.zip.00{i + 1}"
        path.write_bytes(data[i * size:(i + 1) * size])
        paths.append(path)
    return paths, hashlib.sha256(data).hexdigest()


def _release(sha: str) -> SplitZip:
    return SplitZip(name="toy-encoder", packages=["toy-part-1", "toy-part-2", "toy-part-3"],
                    files=["a", "b", "c"], sha256=sha, folder_in_zip="toy-encoder")


MEMBERS = {"toy-encoder/config.json": b'{"model_type": "bert"}', "toy-encoder/1_Pooling/config.json": b"{}",
           "toy-encoder/desktop.ini": b"junk", "toy-encoder/model.safetensors": bytes(range(256)) * 50}


def test_parts_are_joined_verified_and_unpacked_once(tmp_path, monkeypatch):
    parts, sha = _split_zip(tmp_path, MEMBERS)
    release = _release(sha)
    monkeypatch.setattr(SplitZip, "part_paths", lambda self: parts)
    folder = release.folder()
    assert folder == release.target() and folder.name == f"toy-encoder-{sha[:12]}"
    assert (folder / "config.json").read_bytes() == MEMBERS["toy-encoder/config.json"]
    assert (folder / "model.safetensors").read_bytes() == MEMBERS["toy-encoder/model.safetensors"]
    assert (folder / "1_Pooling" / "config.json").is_file() and not (folder / "desktop.ini").exists()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no joined zip or temporary left

    def parts_touched(self):
        raise AssertionError("the parts were read again")

    monkeypatch.setattr(SplitZip, "part_paths", parts_touched)
    assert release.folder() == folder


def test_a_damaged_part_is_refused(tmp_path, monkeypatch):
    parts, sha = _split_zip(tmp_path, MEMBERS)
    damaged = bytearray(parts[1].read_bytes())
    damaged[10] ^= 0xFF
    parts[1].write_bytes(bytes(damaged))
    monkeypatch.setattr(SplitZip, "part_paths", lambda self: parts)
    release = _release(sha)
    with pytest.raises(BackboneError, match="not the pinned") as error:
        release.folder()
    assert "\n" not in str(error.value)
    assert not release.target().exists()


def test_a_member_outside_the_folder_is_refused(tmp_path, monkeypatch):
    parts, sha = _split_zip(tmp_path, {**MEMBERS, "toy-encoder/../../escape.txt": b"x"})
    monkeypatch.setattr(SplitZip, "part_paths", lambda self: parts)
    with pytest.raises(BackboneError, match="outside the model folder"):
        _release(sha).folder()
    assert not list(tmp_path.rglob("escape.txt"))


def test_missing_packages_name_what_to_install():
    release = _release("0" * 64)
    assert release.part_paths() is None and not release.is_available()
    with pytest.raises(BackboneError, match="pip install toy-part-1 toy-part-2 toy-part-3"):
        release.folder()


def test_mpnet_release_is_pinned():
    assert len(MPNET.packages) == len(MPNET.files) == 5 and len(MPNET.sha256) == 64
    assert "headstart[mpnet]" in MPNET.install_hint()
