"""Hostile-but-honest inputs through the command line: every one ends in a one-line `error:` and exit 2, or in a
counted warning where skipping is promised; never a traceback, a silent wrong result or a lost file."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from headstart.cli import app

from .conftest import HANG_GUARD_S, make_image_folder, write_text_table

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming an absurd size (a decompression bomb), with no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def images(work) -> Path:
    return make_image_folder(work / "images", per_class=8, size=16)


@pytest.fixture(scope="module")
def image_model(images, work) -> Path:
    result = run("fit", images, "--image-size", "32", "--out", work / "image-run")
    assert result.exit_code == 0, result.output
    return work / "image-run" / "model"


@pytest.fixture(scope="module")
def text_model(work) -> Path:
    table = write_text_table(work / "reviews.csv", n_per_class=12)
    result = run("fit", table, "--backbone", "minilm", "--out", work / "text-run")
    assert result.exit_code == 0, result.output
    return work / "text-run" / "model"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run folders land in the test's own folder


# ------------------------------------------------------------------------------------------------ options

OPTION_CASES = {
    "--epochs 0": (["--epochs", "0"], "--epochs) must be a whole number >= 1, got 0"),
    "--epochs -1": (["--epochs", "-1"], "--epochs) must be a whole number >= 1, got -1"),
    "--batch-size 0": (["--batch-size", "0"], "--batch-size) must be a whole number >= 1"),
    "--image-size 0": (["--image-size", "0"], "--image-size) must be a whole number >= 1"),
    "--max-length 0": (["--max-length", "0"], "--max-length) must be a whole number >= 1"),
    "--lr -1": (["--lr", "-1"], "--lr) must be a number > 0"),
    "--lr 0": (["--lr", "0"], "--lr) must be a number > 0"),
    "--lr-ratio -1": (["--strategy", "finetune", "--lr-ratio", "-1"], "--lr-ratio) must be a number >= 1"),
    "--lr-ratio on probe": (["--lr-ratio", "2"], "strategy 'probe' has no setting lr_ratio"),
    "--head transformer": (["--head", "transformer"], "--head) must be one of linear, mlp"),
    "--weight-decay -1": (["--weight-decay", "-1"], "--weight-decay) must be a number >= 0"),
    "--warmup-fraction 2": (["--strategy", "finetune", "--warmup-fraction", "2"], "--warmup-fraction)"),
    "--label-smoothing 1": (["--label-smoothing", "1"], "--label-smoothing) must be a number >= 0 and < 1"),
    "--patience 0": (["--patience", "0"], "--patience) must be a whole number >= 1"),
    "--test-size 0": (["--test-size", "0"], "--test-size) must be a fraction between 0 and 1"),
    "--test-size 1.5": (["--test-size", "1.5"], "--test-size) must be a fraction between 0 and 1"),
    "--val-size -1": (["--val-size", "-1"], "--val-size) must be a fraction"),
    "--val-size abc": (["--val-size", "abc"], "split size must be a fraction like 0.2"),
    "--labels-per-class 0": (["--labels-per-class", "0"], "--labels-per-class) must be a whole number >= 1"),
    "--precision fp8": (["--precision", "fp8"], "--precision) must be one of auto, fp32, bf16"),
    "--strategy magic": (["--strategy", "magic"], "unknown strategy 'magic': use one of probe, prototypes, finetune"),
    "--seed -3": (["--seed", "-3"], "--seed) must be a whole number >= 0"),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_bad_option(case, images, tmp_path):
    options, message = OPTION_CASES[case]
    assert_one_line_error(run("fit", images, "--out", tmp_path / "run", *options), message)
    assert not (tmp_path / "run" / "model").exists()


# ------------------------------------------------------------------------------------------------ image data


def test_one_class_folder_is_an_error(tmp_path):
    data = make_image_folder(tmp_path / "one", classes=("only",), per_class=4)
    assert_one_line_error(run("fit", data), "has only one class sub-folder (only)")


def test_sixteen_bit_png_keeps_its_grey_levels(tmp_path):
    from headstart.modalities.image import open_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")
    pixels = np.asarray(open_image(tmp_path / "deep.png"))[..., 0]
    assert len(np.unique(pixels)) >= 60 and pixels.min() == 0 and pixels.max() == 255
    np.testing.assert_allclose(pixels[0], ramp[0] / 257, atol=1)


UNREADABLE = {
    "zero bytes": b"",
    "text named .png": b"this is not an image at all\n",
    "decompression bomb": png_claiming(200_000, 200_000),
    "absurd header": png_claiming(0, 5),
    "truncated": None,  # half of a real PNG
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
@pytest.mark.parametrize("command", ["probe", "finetune", "evaluate"])
def test_unreadable_images_are_skipped_with_a_count_everywhere(kind, command, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6, size=16)
    content = UNREADABLE[kind]
    if content is None:
        good = (data / "red" / "0.png").read_bytes()
        content = good[: len(good) // 2]
    (data / "red" / "bad.png").write_bytes(content)
    if command == "evaluate":
        clean = make_image_folder(tmp_path / "clean", per_class=6, size=16)
        assert run("fit", clean, "--image-size", "32", "--out", tmp_path / "run").exit_code == 0
        result = run("evaluate", tmp_path / "run" / "model", data, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["skipped"] == 1
    else:
        backbone = "efficientnet_lite0" if command == "probe" else "smallcnn"
        result = run("fit", data, "--backbone", backbone, "--strategy", command, "--image-size", "32", "--epochs", "1",
                     "--out", tmp_path / "run")
        assert result.exit_code == 0, result.output
    assert "1 unreadable image(s) skipped" in " ".join(result.stderr.split())
    strict = run("fit", data, "--backbone", "smallcnn", "--strategy", "finetune", "--image-size", "16", "--strict",
                 "--out", tmp_path / "strict")
    assert_one_line_error(strict, "unreadable image(s) skipped")


# ------------------------------------------------------------------------------------------------ tables


def _classes_of(path: Path) -> list[str]:
    from headstart.data import load_data

    return load_data(path).train.classes


def _rows(labels: list[str], n: int = 4) -> list[str]:
    return [label for label in labels for _ in range(n)]


def test_labels_are_read_exactly_as_written_in_csv(tmp_path):
    labels = ["NaN", "nan", "NA", "null", "01", "1", "1.0", "2"]
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(32)], "label": _rows(labels)}).to_csv(path, index=False)
    assert sorted(_classes_of(path)) == sorted(labels)


def test_labels_in_jsonl_keep_their_written_form(tmp_path):
    path = tmp_path / "t.jsonl"
    values = [1, 1.0, "1", "01"]
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": v}) + "\n"
                            for i, v in enumerate(_rows(values))))
    assert sorted(_classes_of(path)) == ["01", "1", "1.0"]  # the number 1 and the string "1" are one label


def test_quoted_tsv_fields_are_unquoted(tmp_path):
    path = tmp_path / "t.tsv"
    lines = ["text\tlabel"] + [f'"a meal {i}"\t"food"' if i % 2 else f"a drink {i}\tfood" for i in range(8)]
    lines += [f"a tool {i}\ttools" for i in range(8)]
    path.write_text("\n".join(lines) + "\n")
    assert _classes_of(path) == ["food", "tools"]


def test_empty_texts_and_missing_labels_are_dropped_with_a_count(tmp_path, caplog):
    from headstart.data import load_data

    path = tmp_path / "t.csv"
    rows = [{"text": f"text {i}", "label": "a" if i % 2 else "b"} for i in range(20)]
    rows += [{"text": "", "label": "a"}, {"text": "   ", "label": "b"}, {"text": "no label", "label": ""}]
    pd.DataFrame(rows).to_csv(path, index=False)
    assert len(load_data(path).train) == 20
    assert "2 row(s) without text and 1 without a label left out (20 of 23 rows kept)" in caplog.text


def _float_labels(n: int = 40, seed: int = 0) -> list[float]:
    return [round(v, 2) for v in np.random.default_rng(seed).uniform(0, 10, n)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_column_of_measurements_is_refused_as_a_regression_target(suffix, tmp_path):
    """Many distinct fractional numbers are a quantity to predict, not classes: one line that says so and how to
    fit it as a regression (never switched silently), instead of "classes have no usable training examples"."""
    path = tmp_path / f"t{suffix}"
    df = pd.DataFrame({"text": [f"text {i}" for i in range(40)], "label": _float_labels()})
    df.to_csv(path, index=False) if suffix == ".csv" else (
        df.to_json(path, orient="records", lines=True) if suffix == ".jsonl" else df.to_parquet(path))
    result = run("fit", path, "--backbone", "minilm", "--out", tmp_path / "run")
    first = ", ".join(str(v) for v in _float_labels()[:3])
    assert_one_line_error(result, f"label column 'label' holds 40 distinct numbers (e.g. {first}, ...; from ")
    assert_one_line_error(result, "looks like a regression target")
    assert_one_line_error(result, "fit it as one with --task regression --target label")
    assert "--label-column" in result.stderr
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("labels, continuous", [
    (["0", "1", "2"] * 20, False),
    ([str(s) for s in range(1, 6)] * 8, False),  # star ratings
    ([f"{s / 2:.1f}" for s in range(2, 11)] * 5, False),  # half stars: 9 classes, written with a fraction
    ([str(c) for c in range(100)] * 2, False),  # CIFAR-100's class ids: whole numbers are classes
    ([f"{c}.0" for c in range(100)], False),  # ... written as floats too
    ([str(v) for v in _float_labels(12)] * 8, False),  # 12 fractional values, each ~8 times: classes
    ([str(v) for v in _float_labels(12)] + ["1"] * 4, True),  # 12 fractional values, most of 16 rows
    ([str(v) for v in _float_labels(30)] * 3, True),  # more than 20 fractional values
    ([str(v) for v in _float_labels(30)] + ["n/a"], False),  # not all numbers
    (["nan", "inf"] + [str(v) for v in _float_labels(30)], False),  # not all finite numbers
])
def test_which_label_columns_look_continuous(labels, continuous):
    from headstart.tasks.classification import looks_continuous

    assert looks_continuous(labels) is continuous


def test_star_ratings_still_train_as_classes(tmp_path):
    from .conftest import make_tiny_bert

    words = {1: "awful", 2: "poor", 3: "fine", 4: "good", 5: "superb"}
    path = tmp_path / "stars.csv"
    pd.DataFrame({"text": [f"a {words[s]} film, number {i}" for i in range(8) for s in words],
                  "label": [s for _ in range(8) for s in words]}).to_csv(path, index=False)
    result = run("fit", path, "--backbone", make_tiny_bert(tmp_path / "bert"), "--strategy", "probe", "--epochs", "1",
                 "--max-length", "16", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "model" / "headstart.json").read_text())
    assert manifest["classes"] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("values, message", [
    ([[1, 2], [3]], "holds list values"), ([b"x", b"y"], "holds bytes values (row 1); labels must be plain text"),
])
def test_parquet_labels_that_are_not_text(values, message, tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["one", "two"] * 4, "label": values * 4}).to_parquet(path)
    assert_one_line_error(run("fit", path, "--backbone", "minilm"), message)


# ------------------------------------------------------------------------------------------------ model folders


def _tamper(model: Path, tmp_path: Path, change) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model, target)
    change(target)
    return target


def _manifest(change):
    def apply(folder: Path):
        file = folder / "headstart.json"
        m = json.loads(file.read_text())
        change(m)
        file.write_text(json.dumps(m))
    return apply


def _weights_of_another_model(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("conv_stem.weight"))
    tensors[key] = torch.zeros(16, 1, 3, 3)  # a one-channel stem: another architecture's weights
    save_file(tensors, str(folder / "model.safetensors"))


IMAGE_MODEL_CASES = {
    "manifest is a list": (lambda f: (f / "headstart.json").write_text("[]"), "holds a JSON list, not an object"),
    "manifest not JSON": (lambda f: (f / "headstart.json").write_text("{oops"), "is not valid JSON"),
    "manifest missing": (lambda f: (f / "headstart.json").unlink(), "is not a saved headstart model"),
    "fewer class names": (_manifest(lambda m: m.update(classes=m["classes"][:2])), "2 class names but the head has 3"),
    "more class names": (_manifest(lambda m: m.update(classes=[*m["classes"], "extra"])), "4 class names but the head"),
    "head size": (_manifest(lambda m: m["head"].update(in_dim=99)), "head takes 99-d embeddings"),
    "missing keys": (_manifest(lambda m: m.pop("backbone")), "field 'backbone': Field required"),
    "zero image size": (_manifest(lambda m: m["backbone"].update(image_size=0)), "image size must be at least 1"),
    "unknown head kind": (_manifest(lambda m: m["head"].update(kind="forest")), "head must be one of"),
    "zero temperature": (_manifest(lambda m: m["head"].update(temperature=0)), "field 'head.temperature'"),
    "newer schema": (_manifest(lambda m: m.update(format_version=9)), "upgrade headstart"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:999]),
                          "not a readable safetensors file"),
    "garbage weights": (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64), "not a readable safetensors"),
    "pickle weights": (lambda f: (f / "model.safetensors").write_bytes(b"\x80\x04\x95\x00cos\nsystem\n."),
                       "not a readable safetensors file"),
    "channel mismatch": (_weights_of_another_model, "does not fit the model its manifest describes"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_MODEL_CASES))
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_damaged_image_model(case, command, image_model, images, tmp_path):
    change, message = IMAGE_MODEL_CASES[case]
    folder = _tamper(image_model, tmp_path, change)
    args = ["predict", folder, images / "red"] if command == "predict" else ["evaluate", folder, images]
    assert_one_line_error(run(*args), message)


TEXT_MODEL_CASES = {
    "config_dir outside": (_manifest(lambda m: m["backbone"].update(config_dir="../../x")), "points outside"),
    "config_dir absolute": (_manifest(lambda m: m["backbone"].update(config_dir="/etc")), "points outside"),
    "tokenizer missing": (lambda f: shutil.rmtree(f / "backbone"), "the backbone's files cannot be read"),
    "tokenizer truncated": (lambda f: (f / "backbone" / "tokenizer.json").write_text('{"version": '),
                            "the backbone's files cannot be read"),
}


@pytest.mark.parametrize("case", sorted(TEXT_MODEL_CASES))
def test_damaged_text_model(case, text_model, tmp_path):
    change, message = TEXT_MODEL_CASES[case]
    assert_one_line_error(run("predict", _tamper(text_model, tmp_path, change), "a fine film"), message)


def test_text_model_given_image_files_refuses_them(text_model, images):
    assert_one_line_error(run("predict", text_model, images / "red" / "0.png"), "is an image file, but this model "
                                                                                  "takes texts")
    assert_one_line_error(run("predict", text_model, images), "is a folder, but this model takes texts")
    assert_one_line_error(run("evaluate", text_model, images), "this model takes text inputs, but the data are image")


def test_image_model_given_a_text(image_model):
    assert_one_line_error(run("predict", image_model, "a fine film"), "input not found")


# ------------------------------------------------------------------------------------------------ caches


@pytest.fixture(scope="module")
def filled_cache(images, work):
    """A cache filled by one probe fit, and that fit's metrics."""
    import os

    cache, before = work / "filled-cache", os.environ.get("HEADSTART_CACHE")
    os.environ["HEADSTART_CACHE"] = str(cache)
    try:
        assert run("fit", images, "--image-size", "32", "--out", work / "cached-run").exit_code == 0
    finally:
        if before is None:
            os.environ.pop("HEADSTART_CACHE")
        else:
            os.environ["HEADSTART_CACHE"] = before
    return cache, work / "cached-run" / "metrics.json"


@pytest.mark.parametrize("damage", ["numbers changed", "truncated", "zero bytes"])
def test_damaged_cache_shards_are_recomputed_with_a_warning(damage, images, filled_cache, tmp_path):
    cache, first_metrics = filled_cache
    shutil.copytree(cache, tmp_path / "cache")
    shards = sorted((tmp_path / "cache" / "embeddings").rglob("*.safetensors"))
    assert shards
    for shard in shards:
        raw = bytearray(shard.read_bytes())
        if damage == "numbers changed":
            raw[-8:] = b"\x7f" * 8  # the header (and so the shapes) stays intact
        shard.write_bytes(bytes(raw[: len(raw) // 2]) if damage == "truncated" else b"" if damage == "zero bytes"
                          else bytes(raw))
    again = run("fit", images, "--image-size", "32", "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    assert "is damaged" in again.stderr and "recomputed" in again.stderr
    a = json.loads(first_metrics.read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
    third = run("fit", images, "--image-size", "32", "--out", tmp_path / "c")
    assert "is damaged" not in third.stderr  # the bad shards are gone, the new ones are good


# ------------------------------------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def finetuned(images, work) -> Path:
    run_dir = work / "ft"
    args = ["fit", images, "--backbone", "smallcnn", "--strategy", "finetune", "--image-size", "16", "--epochs", "1",
            "--out", run_dir]
    assert run(*args).exit_code == 0
    return run_dir


def _resume(images, run_dir, *extra):
    return run("fit", images, "--backbone", "smallcnn", "--strategy", "finetune", "--image-size", "16", "--epochs", "2",
               "--out", run_dir, "--resume", *extra)


@pytest.mark.parametrize("case, message", [
    ("truncated", "is damaged"), ("pickled", "needs pickle to load"), ("missing", "no checkpoint at"),
    ("other model", "tensors differ from this run's"),
])
def test_resume_from_a_bad_checkpoint(case, message, finetuned, images, tmp_path):
    import torch

    run_dir = tmp_path / "ft"
    shutil.copytree(finetuned, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if case == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    elif case == "pickled":
        torch.save({"state_dict": {}, "payload": Path("/etc")}, last)  # an object beyond plain tensors
    elif case == "missing":
        last.unlink()
    else:
        state = torch.load(last, weights_only=True)
        state["state_dict"] = {k: torch.zeros(1) for k in state["state_dict"]}
        torch.save(state, last)
    assert_one_line_error(_resume(images, run_dir), message)


def test_resume_with_other_data_or_settings(finetuned, images, tmp_path):
    run_dir = tmp_path / "ft"
    shutil.copytree(finetuned, run_dir)
    assert_one_line_error(_resume(images, run_dir, "--lr", "0.5"), "settings.lr: null -> 0.5")
    other = make_image_folder(tmp_path / "other", per_class=8, size=16, seed=5)
    assert_one_line_error(_resume(other, run_dir), "the data or settings differ from the run")
    assert_one_line_error(_resume(images, tmp_path / "nothing-here"), "holds no headstart run to continue")


def test_pickled_weights_file_is_refused(tmp_path, images):
    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Path("/etc")}, evil)
    assert_one_line_error(run("fit", images, "--backbone", "timm:resnet18", "--weights", evil), "needs pickle to load")


# ------------------------------------------------------------------------------------------------ run folders


def test_out_that_is_a_file_or_unwritable(images, tmp_path):
    (tmp_path / "f").write_text("mine")
    assert_one_line_error(run("fit", images, "--out", tmp_path / "f"), "is a file: give a folder path")
    assert_one_line_error(run("fit", images, "--out", tmp_path / "f" / "below"), "cannot write there")
    assert_one_line_error(run("fit", images, "--out", "/proc/headstart-run"), "cannot write there")
    assert (tmp_path / "f").read_text() == "mine"


def test_a_folder_of_someone_elses_files_is_never_touched(images, tmp_path):
    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "checkpoints" / "precious.ckpt").write_text("keep me too")
    assert_one_line_error(run("fit", images, "--out", out, "--image-size", "32"), "holds files headstart did not write")
    assert not (out / "model").exists()
    result = run("fit", images, "--backbone", "smallcnn", "--strategy", "finetune", "--image-size", "16", "--epochs",
                 "1", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "checkpoints" / "precious.ckpt").read_text() == "keep me too"
    assert (out / "model" / "model.safetensors").is_file()


def test_a_split_left_without_readable_items(tmp_path):
    data = tmp_path / "data"
    for name in ("train", "val", "test"):
        make_image_folder(data / name, per_class=3, size=16)
    for f in (data / "val").rglob("*.png"):
        f.write_bytes(b"")
    assert_one_line_error(run("fit", data, "--image-size", "32"), "the validation split (val) has no readable items")
    make_image_folder(data / "val", per_class=3, size=16)
    for f in (data / "test").rglob("*.png"):
        f.write_bytes(b"")
    assert_one_line_error(run("fit", data, "--image-size", "32", "--out", tmp_path / "r"),
                          "items could be read, so there is nothing to evaluate: add readable files")


def test_pretrain_resume_from_a_damaged_checkpoint(images, tmp_path):
    args = ["pretrain", images, "--objective", "autoencoder", "--backbone", "smallcnn", "--image-size", "16",
            "--batch-size", "8", "--out", tmp_path / "ae"]
    assert run(*args, "--max-steps", "2").exit_code == 0
    last = tmp_path / "ae.run" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:500])
    assert_one_line_error(run(*args, "--max-steps", "4", "--resume"), "is damaged")


def test_a_folder_of_another_tools_model_and_checkpoints_is_not_taken_for_a_run(images, tmp_path):
    out = tmp_path / "other-tool"
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("keep me")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_text("another trainer's checkpoint")
    assert_one_line_error(run("fit", images, "--out", out), "holds files headstart did not write (checkpoints, model)")
    assert (out / "model" / "notes.txt").read_text() == "keep me"


def test_leftovers_of_a_killed_run_do_not_block_the_next(images, tmp_path):
    out = tmp_path / "run"
    assert run("fit", images, "--image-size", "32", "--out", out).exit_code == 0
    (out / ".metrics.json.999999.link").symlink_to("model/metrics.json")
    (out / ".headstart-run.json.abc.tmp").write_text("{")
    (out / ".headstart-write-check-999999").write_bytes(b"")
    assert run("fit", images, "--image-size", "32", "--out", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_parquet_nulls_are_missing_labels_not_a_class(tmp_path):
    from headstart.data import load_data

    path = tmp_path / "t.parquet"
    labels = pd.array([1, 2, None, 1, 2, 1], dtype="Int64")
    pd.DataFrame({"text": [f"t{i}" for i in range(6)], "label": labels}).to_parquet(path)
    data = load_data(path).train
    assert data.classes == ["1", "2"] and len(data) == 5


def test_nan_embeddings_are_an_error_not_a_crash():
    from headstart.data import Dataset
    from headstart.errors import HeadstartError
    from headstart.strategies.probe import Probe, train_head

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    x[0, 0] = np.nan
    data = Dataset("text", [""] * 20, np.arange(20) % 2, ["a", "b"])
    with pytest.raises(HeadstartError, match="validation loss is not a finite number"):
        train_head(x, data, x, data, Probe())


@pytest.mark.parametrize("args, message", [
    (["fit", "x", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["fit", "x", "--epoch", "3"], "No such option: --epoch (Possible options: --epochs)"),
    (["fitt", "x"], "No such command 'fitt'"),
    (["fit"], "Missing argument 'data'"),
])
def test_usage_errors_of_the_console_script_are_one_line(args, message):
    import subprocess
    import sys

    code = "import sys; from headstart.cli import main; sys.argv = ['headstart', *sys.argv[1:]]; main()"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_an_unwritable_cache_is_skipped_with_a_warning(images, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", "/proc/headstart-cache")
    result = run("fit", images, "--image-size", "32", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "cannot write to /proc/headstart-cache" in " ".join(result.stderr.split())


def test_a_save_that_fails_half_way_keeps_the_previous_model(image_model, tmp_path, monkeypatch):
    import headstart
    from headstart import artifact

    model = headstart.load(image_model)
    target = tmp_path / "model"
    shutil.copytree(image_model, target)

    def full_disk(module, file):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact, "save_weights", full_disk)
    with pytest.raises(headstart.HeadstartError, match=r"No space left on device.*previous model there is unchanged"):
        model.save(target)
    assert headstart.load(target).metrics == model.metrics
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no half-written folder left


# ------------------------------------------------------------------------------------------------ reliability II


def test_overwrite_never_deletes_files_below_the_top_level(images, tmp_path):
    out = tmp_path / "mine"
    (out / "model").mkdir(parents=True)
    (out / "model" / "mine.bin").write_bytes(b"precious")  # a model/ that headstart did not write
    result = run("fit", images, "--image-size", "32", "--out", out, "--overwrite")
    assert_one_line_error(result, "holds files headstart did not write where a run writes (model/mine.bin)")
    assert (out / "model" / "mine.bin").read_bytes() == b"precious"
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "last.ckpt").write_text("another trainer's checkpoint")  # a fresh finetune deletes it
    result = run("fit", images, "--backbone", "smallcnn", "--strategy", "finetune", "--image-size", "16", "--epochs",
                 "1", "--out", other, "--overwrite")
    assert_one_line_error(result, "(checkpoints/last.ckpt)")
    assert (other / "checkpoints" / "last.ckpt").read_text() == "another trainer's checkpoint"
    assert not (other / "model").exists()


def test_a_class_folder_whose_name_is_not_utf8_is_refused_before_training(tmp_path):
    import os

    data = make_image_folder(tmp_path / "data", per_class=4, size=16)
    os.rename(os.fsencode(data / "green"), os.fsencode(data) + b"/gr\xffen")  # Linux names are bytes
    result = run("fit", data, "--image-size", "32", "--out", tmp_path / "run")
    assert_one_line_error(result, "the class folder " + str(data) + "/gr\\xffen has a name that is not valid UTF-8")
    assert not (tmp_path / "run" / "model").exists()


def test_a_text_longer_than_a_file_name_is_a_text(text_model, image_model):
    long_text = "a wonderful and moving film " * 12  # 336 characters: more than a file name may have
    for command in ("predict", "explain"):
        result = run(command, text_model, long_text)
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(records) == 1 and records[0]["input"] == long_text and records[0]["label"]
    assert_one_line_error(run("predict", image_model, long_text), "is longer than a file name can be")


def test_explain_out_that_is_a_file_and_an_unreadable_image(image_model, images, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert_one_line_error(run("explain", image_model, images / "red" / "0.png", "--out", tmp_path / "notes.txt"),
                          "is a file: give a folder for the explanations")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(images / "red" / "0.png", folder / "0.png")
    (folder / "1.png").write_text("not an image")
    assert_one_line_error(run("explain", image_model, folder, "--method", "gradcam", "--out", tmp_path / "x"),
                          "1.png cannot be read as an image (not an image file)")


def test_report_into_a_folder_that_cannot_be_written(image_model):
    assert_one_line_error(run("report", image_model.parent, "--out", "/proc/headstart-report.html"),
                          "--out /proc/headstart-report.html: cannot write to /proc")


@pytest.mark.parametrize("args, message", [
    (["predict", "MODEL", "IMAGE", "--top-k", "-5"], "--top-k must be a whole number >= 1, got -5"),
    (["predict", "MODEL", "IMAGE", "--top-k", "0", "--runtime", "onnx"], "--top-k must be a whole number >= 1"),
    (["serve", "MODEL", "--port", "70000"], "--port must be a whole number from 1 to 65535, got 70000"),
    (["export", "MODEL", "--parity-items", "-5"], "--parity-items must be a whole number >= 2, got -5"),
    (["export", "MODEL", "--quantize", "int8", "--max-drop", "nan"], "--max-drop must be a number"),
    (["export", "MODEL", "--out", "/proc/headstart.onnx"], "--out /proc/headstart.onnx: cannot write to /proc"),
])
def test_bad_options_of_predict_serve_and_export(args, message, image_model, images):
    args = [{"MODEL": image_model, "IMAGE": images / "red" / "0.png"}.get(a, a) for a in args]
    assert_one_line_error(run(*args), message)


def test_export_never_replaces_a_file_it_did_not_write(image_model, tmp_path):
    (tmp_path / "theirs.onnx").write_bytes(b"someone else's graph")
    assert_one_line_error(run("export", image_model, "--out", tmp_path / "theirs.onnx"),
                          "theirs.onnx exists and headstart did not export it")
    assert (tmp_path / "theirs.onnx").read_bytes() == b"someone else's graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.onnx"]


def test_int8_accuracy_on_a_handful_of_test_items_is_a_warning(image_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("export", image_model, "--quantize", "int8", "--out", tmp_path / "m.int8.onnx", "--force")
    assert result.exit_code == 0, result.output
    items = json.loads((tmp_path / "m.int8.onnx.json").read_text())["quantization"]["test_items"]
    assert items < 10
    assert f"measured on only {items} test item(s)" in " ".join(result.stderr.split())


def test_a_folder_mixing_images_and_sounds_says_what_it_leaves_out(images, tmp_path):
    import soundfile

    data = tmp_path / "mixed"
    shutil.copytree(images, data)
    for name in ("red", "green"):
        soundfile.write(data / name / "clip.wav", np.zeros(800, np.float32), 8000)
    result = run("select", data, "--backbones", "smallcnn", "--per-class", "4", "--image-size", "16")
    assert result.exit_code == 0, result.output
    assert "2 recording file(s) left out: the class folders are read as image data" in " ".join(result.stderr.split())
