"""Data bigger than memory: tar shards and Parquet files of image bytes, read as references to each item's bytes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headstart
from headstart.data.sources import load_data
from headstart.errors import DataError
from headstart.runtime.members import ParquetCell, ShardMember

CLASSES = ("red", "green", "blue")


def png_bytes(colour: int, rng: np.random.Generator, size: int = 16) -> bytes:
    """A small image whose dominant channel is its class (learnable by any backbone)."""
    pixels = rng.integers(0, 90, (size, size, 3))
    pixels[..., colour] += 150
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, n_shards: int = 3, per_shard: int = 12, prefix: str = "shard", seed: int = 0,
                 label: str = "cls") -> list[Path]:
    """WebDataset-style shards: KEY.png with KEY.cls holding the class index (or KEY.txt with its name)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(n_shards):
        path = folder / f"{prefix}-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                key, colour = f"{s:03d}{i:05d}", i % len(CLASSES)
                add_member(tar, f"{key}.png", png_bytes(colour, rng))
                text = str(colour) if label == "cls" else CLASSES[colour]
                add_member(tar, f"{key}.{label}", text.encode())
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def pretrained_smallcnn(tmp_path_factory) -> Path:
    """A smallcnn's (random) weights saved as a file: with --weights it counts as pre-trained, so a probe runs
    on it in seconds."""
    from safetensors.torch import save_model

    from headstart.backbones.smallcnn import SmallCNN

    path = tmp_path_factory.mktemp("weights") / "smallcnn.safetensors"
    save_model(SmallCNN(), str(path))
    return path


def test_a_folder_of_shards_is_read_as_references_with_labels(tmp_path):
    write_shards(tmp_path / "data")
    splits = load_data(tmp_path / "data")
    train = splits.train
    assert splits.val is None and splits.test is None
    assert train.modality == "image" and len(train) == 36 and train.classes == ["0", "1", "2"]
    assert all(isinstance(item, ShardMember) for item in train.items)
    assert np.bincount(train.labels).tolist() == [12, 12, 12]
    first = train.items[0]
    assert first.name == "00000000.png" and Image.open(io.BytesIO(first.read())).size == (16, 16)


def test_shards_named_for_splits_are_those_splits_with_the_training_classes(tmp_path):
    write_shards(tmp_path / "data", n_shards=2, prefix="train", label="txt")
    write_shards(tmp_path / "data", n_shards=1, prefix="val", label="txt", seed=1)
    splits = load_data(tmp_path / "data")
    assert splits.summary() == {"train": 24, "val": 12}
    assert splits.classes == sorted(CLASSES) and splits.val.classes == splits.classes
    assert "val-*.tar" in splits.origins()["val"]


def test_shards_named_for_a_split_and_not_are_refused(tmp_path):
    write_shards(tmp_path / "data", n_shards=1, prefix="train")
    write_shards(tmp_path / "data", n_shards=1, prefix="extra")
    with pytest.raises(DataError, match="name every shard for its split"):
        load_data(tmp_path / "data")


def test_an_item_without_a_label_is_left_out_and_said(tmp_path, caplog):
    write_shards(tmp_path / "data", n_shards=2)
    with tarfile.open(tmp_path / "data" / "shard-002.tar", "w") as tar:
        add_member(tar, "lonely.png", png_bytes(0, np.random.default_rng(0)))
    data = load_data(tmp_path / "data").train
    assert len(data) == 24 and data.skipped and "lonely.png" in data.skipped[0][0]
    assert "left out" in caplog.text


def test_fit_probe_on_shards_predicts_and_reports_a_corrupt_member_as_unreadable(tmp_path, pretrained_smallcnn, caplog):
    shards = write_shards(tmp_path / "data", n_shards=3, per_shard=30)
    with tarfile.open(shards[0], "a") as tar:  # a member that is no image, with a label
        add_member(tar, "broken.png", b"\x89PNG but not really")
        add_member(tar, "broken.cls", b"0")
    model = headstart.fit(tmp_path / "data", "smallcnn", "probe", out=tmp_path / "run", weights=str(pretrained_smallcnn),
                          val_size=0.2, test_size=0.2)
    assert "unreadable image(s) skipped" in caplog.text and "broken.png" in caplog.text
    probe_images = tmp_path / "probe"
    probe_images.mkdir()
    rng = np.random.default_rng(5)
    for colour in range(3):
        (probe_images / f"{colour}.png").write_bytes(png_bytes(colour, rng))
    predictions = model.predict(sorted(probe_images.iterdir()))
    assert predictions == ["0", "1", "2"]


def test_a_shard_shortened_after_indexing_is_an_unreadable_item_not_a_crash(tmp_path):
    from headstart.modalities import get_modality

    shard = write_shards(tmp_path / "data", n_shards=1)[0]
    items = load_data(tmp_path / "data").train.items
    shard.write_bytes(shard.read_bytes()[: items[5].offset])
    failures = get_modality("image").find_unreadable(items)
    assert [i for i, _ in failures] == list(range(5, len(items)))
    assert "ends inside" in failures[0][1] or "OSError" in failures[0][1]


def test_compressed_shards_are_refused_with_the_reason(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-0.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match="compressed"):
        load_data(tmp_path / "data")


def test_a_parquet_file_of_image_bytes_is_read_as_cells(tmp_path, pretrained_smallcnn):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    colours = [i % 3 for i in range(60)]
    images = [{"bytes": png_bytes(c, rng), "path": None} for c in colours]
    table = pa.table({"image": images, "label": [CLASSES[c] for c in colours]})
    pq.write_table(table, tmp_path / "images.parquet", row_group_size=25)
    data = load_data(tmp_path / "images.parquet").train
    assert data.modality == "image" and len(data) == 60 and data.classes == sorted(CLASSES)
    assert all(isinstance(item, ParquetCell) for item in data.items)
    assert {item.row_group for item in data.items} == {0, 1, 2} and data.items[30].row == 5
    model = headstart.fit(tmp_path / "images.parquet", "smallcnn", "probe", out=tmp_path / "run",
                          weights=str(pretrained_smallcnn))
    assert model.predict([data.items[0]])[0] in CLASSES


def test_shards_of_wav_files_are_audio_items_decoded_from_their_bytes(tmp_path):
    import soundfile

    from headstart.runtime.audio_codec import load_audio

    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data" / "clips.tar", "w") as tar:
        for i in range(6):
            buffer = io.BytesIO()
            tone = np.sin(np.arange(8000) * (0.05 + 0.1 * (i % 2))).astype(np.float32)
            soundfile.write(buffer, tone, 8000, format="WAV")
            add_member(tar, f"clip{i}.wav", buffer.getvalue())
            add_member(tar, f"clip{i}.json", f'{{"label": "{["low", "high"][i % 2]}"}}'.encode())
    data = load_data(tmp_path / "data").train
    assert data.modality == "audio" and data.classes == ["high", "low"] and data.labels.tolist() == [1, 0] * 3
    samples = load_audio(data.items[0], 16_000)
    assert samples.shape == (16_000,) and np.abs(samples).max() > 0.5
