"""ONNX export: the graph predicts what the PyTorch model does (checked on 500 real validation items), int8 is
measured and refused when it costs too much, and the exported graph runs without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.errors import HeadstartError
from headstart.export import export_onnx, parity
from headstart.runtime import load as load_graph

from .conftest import HANG_GUARD_S, shared_dataset

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("fixture", ["exported_cnn", "exported_text"])
def test_fp32_parity_on_500_validation_items_is_recorded(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    described = json.loads((model_dir / "model.onnx.json").read_text())
    p = described["parity"]
    assert p["items"] == 500 and p["source"] == "validation"
    assert p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0 and p["reference_precision"] == "fp32"
    assert described["metrics"]["evaluation_precision"] == "fp32"  # the graph's numbers and its metrics: one precision
    assert described["precision"] == "fp32" and described["classes"] == headstart.load(model_dir).classes
    assert described["preprocessing"] and described["inputs"]


def test_text_export_has_its_tokenizer_beside_the_graph_and_a_dynamic_sequence_axis(exported_text):
    described = json.loads((exported_text / "model.onnx.json").read_text())
    assert (exported_text / described["preprocessing"]["tokenizer"]).is_file()
    graph = load_graph(exported_text)
    texts = ["a wonderful and lovely film", "dull", "a " * 200 + "boring film"]  # 3 lengths, one over max_length
    torch_probs, _ = headstart.load(exported_text).scores(texts, precision="fp32")
    onnx_probs, failures = graph.scores(texts)
    assert failures == [] and np.abs(onnx_probs - torch_probs).max() < 1e-4


def test_onnx_runtime_predicts_like_pytorch_on_image_files(exported_cnn, small_cnn_run):
    files = sorted((small_cnn_run.parent / "images").rglob("*.png"))[::7]
    torch_probs, _ = headstart.load(exported_cnn).scores(files, precision="fp32")
    onnx_probs, failures = headstart.load(exported_cnn, runtime="onnx").scores(files)
    assert failures == []
    assert np.abs(onnx_probs - torch_probs).max() < 1e-3  # Pillow's resize in place of torchvision's
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).mean() == 1.0


def test_the_onnx_runtime_path_imports_no_training_stack(exported_cnn, small_cnn_run):
    image = next((small_cnn_run.parent / "images").rglob("*.png"))
    code = (f"import sys, json\nfrom headstart.runtime import load\nm = load({str(exported_cnn)!r})\n"
            f"print(m.predict([{str(image)!r}])[0])\n"
            "print(json.dumps([k for k in ('torch', 'transformers', 'lightning', 'timm') if k in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S, check=True)
    label, heavy = out.stdout.strip().splitlines()
    assert label in ("red", "green", "blue") and json.loads(heavy) == []


def test_cli_predict_with_onnx_runtime_matches_torch(exported_text):
    texts = ["a delightful and superb film", "a tedious and painful film"]
    onnx = [json.loads(line) for line in run("predict", exported_text, *texts, "--runtime", "onnx").stdout.splitlines()]
    torch_ = [json.loads(line) for line in run("predict", exported_text, *texts).stdout.splitlines()]
    assert [r["label"] for r in onnx] == [r["label"] for r in torch_] and len(onnx) == 2
    assert all(abs(a["score"] - b["score"]) < 0.02 for a, b in zip(onnx, torch_))  # torch predicts in bf16 here


def test_a_failed_parity_check_is_an_error_and_writes_nothing(small_cnn_run, tmp_path, monkeypatch):
    real = parity.graph_probabilities
    monkeypatch.setattr(parity, "graph_probabilities", lambda graph, feeds: real(graph, feeds) + 1e-3)
    with pytest.raises(HeadstartError, match=r"does not predict what the model does.*max score difference"):
        export_onnx(small_cnn_run / "model", out=tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fixture, method", [("small_cnn_run", "static"), ("tiny_text_run", "dynamic")])
def test_int8_records_its_accuracy_change_and_is_refused_past_the_limit(fixture, method, request, tmp_path,
                                                                       monkeypatch):
    model_dir = request.getfixturevalue(fixture) / "model"
    monkeypatch.chdir(tmp_path)  # ONNX Runtime's tools like to leave temporary files in the working directory
    with pytest.raises(HeadstartError, match=r"no int8 graph was written.*--force"):
        export_onnx(model_dir, out=tmp_path / "refused.onnx", quantize="int8", max_drop=-100)
    assert not (tmp_path / "refused.onnx").exists()
    report = export_onnx(model_dir, out="m.int8.onnx", quantize="int8", max_drop=-100, force=True)
    q = json.loads((tmp_path / "m.int8.onnx.json").read_text())["quantization"]
    assert q["method"] == method and q["forced"] is True and q["test_items"] > 0
    assert q["size_int8_mb"] < q["size_fp32_mb"] and report.graph.resolve() == tmp_path / "m.int8.onnx"
    graph = load_graph(tmp_path / "m.int8.onnx")
    assert graph.manifest.precision == "int8"
    left = {p.name for p in tmp_path.iterdir()} - {"m.int8.onnx", "m.int8.onnx.json", "tokenizer.json"}
    assert left == set()


def test_export_cli_reports_parity_and_errors_are_one_line(small_cnn_run, tmp_path):
    result = run("export", small_cnn_run / "model", "--out", tmp_path / "x.onnx", "--parity-items", "50")
    assert result.exit_code == 0, result.output
    assert "parity on 50 validation items" in " ".join(result.stdout.split()) and (tmp_path / "x.onnx").is_file()
    for args, message in [(("--format", "tflite"), "--format must be onnx"),
                          (("--quantize", "int4"), "--quantize must be int8"),
                          (("--out", tmp_path / "x.txt"), "must end in .onnx")]:
        bad = run("export", small_cnn_run / "model", *args)
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.output
    missing = run("export", tmp_path / "nope")
    assert missing.exit_code == 2 and "not a saved headstart model" in missing.stderr
    no_graph = run("predict", small_cnn_run / "model", "x.png", "--runtime", "onnx-int8")
    assert no_graph.exit_code == 2 and "headstart export" in no_graph.stderr


def test_export_checks_on_given_data_when_the_recorded_source_is_gone(tmp_path, image_folder):
    model = headstart.fit(image_folder, "smallcnn", "finetune", out=tmp_path / "run", epochs=1, cache=False)
    moved = image_folder.rename(tmp_path / "moved")
    with pytest.raises(HeadstartError, match="pass --data"):
        export_onnx(tmp_path / "run" / "model")
    report = export_onnx(tmp_path / "run" / "model", data=moved)
    assert report.parity["items"] == model.manifest.data.splits["val"] and report.parity["top1_agreement"] == 1.0


@pytest.mark.slow
def test_efficientnet_lite0_export_parity_on_cifar10(tmp_path):
    data = shared_dataset("images/cifar10/train")
    headstart.fit(data, "efficientnet_lite0", "probe", out=tmp_path / "run", labels_per_class=20, val_size=100,
                  test_size=100)
    report = export_onnx(tmp_path / "run" / "model", parity_items=100)
    assert report.parity["items"] == 100 and report.parity["max_abs_diff"] <= 1e-4
    assert report.parity["top1_agreement"] == 1.0


def test_the_deployment_image_codec_preprocesses_like_training(tmp_path):
    """Pillow's resize (deployment) against torchvision's (training): at most one grey level apart."""
    from PIL import Image

    from headstart.backbones.smallcnn import SmallCNN
    from headstart.modalities.image import open_image
    from headstart.runtime.codecs import get_codec

    rng = np.random.default_rng(0)
    for (w, h), size, interpolation in [((300, 200), 32, "bilinear"), ((640, 480), 224, "bicubic"), ((20, 20), 64, "bilinear")]:
        backbone = SmallCNN(image_size=size)
        backbone.interpolation = interpolation
        smooth = Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        smooth.save(tmp_path / "x.jpg", quality=92)
        expected = backbone.transform(False)(open_image(tmp_path / "x.jpg", backbone.draft_size())).numpy()
        got = get_codec("image")(backbone.onnx_preprocessing(), tmp_path).prepare(tmp_path / "x.jpg")
        assert got.shape == expected.shape == (3, size, size)
        assert np.abs(got - expected).max() <= 1.01 / 255 / 0.25 and np.abs(got - expected).mean() < 1e-3


def test_predict_with_the_onnx_runtime_refuses_files_it_cannot_read_as_texts(exported_text, tmp_path):
    (tmp_path / "t.csv").write_text("text,label\nfine,positive\n")
    result = run("predict", exported_text, tmp_path / "t.csv", "--runtime", "onnx")
    assert result.exit_code == 2 and "tables: --runtime torch" in " ".join(result.stderr.split())


# ------------------------------------------------------------------------------------------------ damaged descriptions


def _graph_copy(model_dir, folder, change=None):
    """The exported graph, its description (changed by `change`) and its tokenizer, copied into `folder`."""
    import shutil

    folder.mkdir()
    for name in ("model.onnx", "model.onnx.json", "tokenizer.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, folder / name)
    if change is not None:
        sidecar = folder / "model.onnx.json"
        description = json.loads(sidecar.read_text())
        change(description)
        sidecar.write_text(json.dumps(description))
    return folder


def _one_line_error(result, message):
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in " ".join(result.stderr.split()), result.stderr


def _preprocessing(**changes):
    return lambda m: m["preprocessing"].update(changes)


DESCRIPTION_CASES = {
    "tokenizer elsewhere": ("exported_text", _preprocessing(tokenizer="../../elsewhere/tokenizer.json"),
                            "preprocessing.tokenizer '../../elsewhere/tokenizer.json' points outside"),
    "tokenizer absolute": ("exported_text", _preprocessing(tokenizer="/etc/hostname"), "'/etc/hostname' points outside"),
    "graph elsewhere": ("exported_cnn", lambda m: m.update(graph="../../model.onnx"), "field 'graph'"),
    "more classes": ("exported_cnn", lambda m: m.update(classes=[*m["classes"], "extra"]),
                     "it names 4 classes but model.onnx predicts 3"),
    "fewer classes": ("exported_cnn", lambda m: m.update(classes=m["classes"][:2]), "it names 2 classes but"),
    "another modality": ("exported_cnn", lambda m: m.update(modality="text"),
                         "describes a model of text inputs (graph inputs input_ids, attention_mask), but model.onnx "
                         "takes pixels"),
    "another image size": ("exported_cnn", lambda m: m["preprocessing"].update(image_size=m["preprocessing"]
                                                                               ["image_size"] + 8),
                           "the graph takes 3x"),
    "image size 0": ("exported_cnn", _preprocessing(image_size=0), "field 'preprocessing.image_size'"),
    "mean not numbers": ("exported_cnn", _preprocessing(mean=["a", "b", "c"]), "field 'preprocessing.mean.0'"),
    "std of zero": ("exported_cnn", _preprocessing(std=[0.2, 0, 0.2]), "field 'preprocessing.std.1'"),
    "max_length a word": ("exported_text", _preprocessing(max_length="long"), "field 'preprocessing.max_length'"),
}


@pytest.mark.parametrize("case", sorted(DESCRIPTION_CASES))
def test_a_description_that_does_not_fit_its_graph_is_refused_at_load(case, request, tmp_path):
    fixture, change, message = DESCRIPTION_CASES[case]
    model_dir = request.getfixturevalue(fixture)
    folder = _graph_copy(model_dir, tmp_path / "graph", change)
    item = "a fine film" if fixture == "exported_text" else model_dir.parents[1] / "images" / "red" / "0.png"
    result = run("predict", folder, item, "--runtime", "onnx")
    _one_line_error(result, message)
    assert "model.onnx.json" in result.stderr
    with pytest.raises(HeadstartError, match="export again"):
        load_graph(folder)


def test_a_damaged_graph_is_one_line_with_either_engine(exported_cnn, tmp_path, monkeypatch):
    import types

    folder = _graph_copy(exported_cnn, tmp_path / "graph")
    graph = folder / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    image = exported_cnn.parents[1] / "images" / "red" / "0.png"
    _one_line_error(run("predict", folder, image, "--runtime", "onnx"), "cannot be loaded by ONNX Runtime")
    try:
        import openvino  # noqa: F401
    except ImportError:  # stands in for OpenVINO as it answers a damaged file: a RuntimeError with a C++ trace
        class Core:
            def compile_model(self, *args):
                raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:109:\n[ NETWORK_NOT_READ ] Unable "
                                   "to read the model\n at frontend.cpp:42")

        monkeypatch.setitem(sys.modules, "openvino", types.SimpleNamespace(Core=Core))
    _one_line_error(run("predict", folder, image, "--runtime", "openvino"), "cannot be loaded by OpenVINO")


def test_a_text_longer_than_a_file_name_is_a_text_to_the_onnx_runtime(exported_text):
    long_text = "a lovely and moving film " * 12
    result = run("predict", exported_text, long_text, "--runtime", "onnx")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input"] == long_text
