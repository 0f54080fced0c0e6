"""Data sources: image folders, tables, built-ins, splits, and their error messages."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from headstart.data import load_data, make_splits
from headstart.data.builtins import read_idx
from headstart.errors import DataError
from headstart.modalities.image import open_image

from .conftest import make_image_folder, write_text_table


def test_image_folder_reads_classes_and_files(image_folder):
    splits = load_data(image_folder)
    assert splits.train.classes == ["blue", "green", "red"]
    assert len(splits.train) == 36
    assert splits.train.class_counts() == {"blue": 12, "green": 12, "red": 12}
    assert splits.val is None and splits.test is None


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16"])
def test_image_modes_convert_to_rgb(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    Image.new(mode, (5, 7)).save(path)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (5, 7)


def test_rgba_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(path)
    assert open_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_explicit_split_folders_are_honoured(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=6)
    make_image_folder(tmp_path / "d" / "val", per_class=2, seed=1)
    make_image_folder(tmp_path / "d" / "test", per_class=3, seed=2)
    splits = make_splits(load_data(tmp_path / "d"))
    assert splits.summary() == {"train": 18, "val": 6, "test": 9}


def test_explicit_split_tables_are_honoured(tmp_path):
    write_text_table(tmp_path / "train.csv", 20)
    write_text_table(tmp_path / "dev.csv", 5, seed=1)
    splits = make_splits(load_data(tmp_path))
    assert splits.summary()["val"] == 10 and splits.summary()["train"] == 32  # test carved from train (20%)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_tables_of_each_format(tmp_path, suffix):
    data = load_data(write_text_table(tmp_path / f"t{suffix}", 10)).train
    assert data.modality == "text" and len(data) == 20
    assert data.classes == ["negative", "positive"]
    assert "film" in data.items[0]


def test_columns_found_by_common_names_or_given(tmp_path):
    path = tmp_path / "intents.csv"
    pd.DataFrame({"utterance": ["a", "b", "c", "d"], "intent": ["x", "y", "x", "y"]}).to_csv(path, index=False)
    assert load_data(path).train.classes == ["x", "y"]
    other = tmp_path / "odd.csv"
    pd.DataFrame({"words": ["a", "b"], "tag": ["x", "y"]}).to_csv(other, index=False)
    with pytest.raises(DataError, match=r"no text or file column.*--text-column"):
        load_data(other)
    assert len(load_data(other, text_column="words", label_column="tag").train) == 2


def test_numeric_labels_sort_numerically(tmp_path):
    path = tmp_path / "n.csv"
    pd.DataFrame({"text": list("abcd"), "label": [10, 2, 1, 2]}).to_csv(path, index=False)
    assert load_data(path).train.classes == ["1", "2", "10"]


@pytest.mark.parametrize("case, pattern", [
    ("missing", "does not exist"),
    ("no_class_folders", "no class sub-folders"),
    ("empty_class", "class 'empty' has no usable image files"),
    ("one_class", "only one class"),
    ("no_label", "no label column"),
])
def test_bad_data_errors_name_the_problem(tmp_path, case, pattern):
    if case == "missing":
        target = tmp_path / "nope"
    elif case == "no_class_folders":
        target = tmp_path / "flat"
        target.mkdir()
        Image.new("RGB", (4, 4)).save(target / "a.png")
    elif case == "empty_class":
        target = make_image_folder(tmp_path / "imgs", per_class=2)
        (target / "empty").mkdir()
        (target / "empty" / "notes.txt").write_text("no images here")
    elif case == "one_class":
        target = tmp_path / "one.csv"
        pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}).to_csv(target, index=False)
    else:
        target = tmp_path / "nolabel.csv"
        pd.DataFrame({"text": ["a", "b"]}).to_csv(target, index=False)
    with pytest.raises(DataError, match=pattern):
        load_data(target)


def test_stratified_split_and_labels_per_class(image_folder):
    splits = make_splits(load_data(image_folder), val_size=0.2, test_size=0.25, labels_per_class=4, seed=3)
    assert splits.train.class_counts() == {"blue": 4, "green": 4, "red": 4}
    assert all(n <= 4 for n in splits.val.class_counts().values())
    assert len(splits.test) == 9 and set(splits.test.class_counts().values()) == {3}
    train_files = set(map(str, splits.train.items))
    assert not train_files & set(map(str, splits.test.items)) and not train_files & set(map(str, splits.val.items))
    again = make_splits(load_data(image_folder), val_size=0.2, test_size=0.25, labels_per_class=4, seed=3)
    assert list(map(str, again.train.items)) == list(map(str, splits.train.items))


def test_labels_per_class_and_split_sizes_are_checked(image_folder):
    from headstart.errors import SettingsError

    with pytest.raises(SettingsError, match=r"--labels-per-class\) must be a whole number >= 1"):
        make_splits(load_data(image_folder), labels_per_class=0)
    for size in (0, 0.0, 1.0, -2, True):
        with pytest.raises(SettingsError, match=r"--test-size\) must be a fraction between 0 and 1"):
            make_splits(load_data(image_folder), test_size=size)


def test_digits_builtin():
    data = load_data("digits").train
    assert len(data) == 1797 and data.items.shape == (1797, 8, 8) and data.items.dtype == np.uint8
    assert data.items.max() == 255


def test_idx_reader_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.tobytes())
    assert np.array_equal(read_idx(path), images)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.tobytes()[:-1])
    with pytest.raises(DataError, match=r"truncated"):
        read_idx(path)


def test_fashion_mnist_from_debian_package():
    from headstart.data.builtins import FASHION_DEBIAN_DIR

    if not FASHION_DEBIAN_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
    splits = load_data("fashion-mnist")
    assert splits.train.items.shape == (60000, 28, 28) and splits.test.items.shape == (10000, 28, 28)
    assert splits.train.class_counts()["Bag"] == 6000


def test_fashion_mnist_offline_error_says_how_to_install(monkeypatch, tmp_path):
    import headstart.data.builtins as builtins

    monkeypatch.setattr(builtins, "FASHION_DEBIAN_DIR", tmp_path / "absent")

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_network)
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist")
