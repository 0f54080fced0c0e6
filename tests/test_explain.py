"""Explanations: occlusion and Grad-CAM for images and Integrated Gradients for texts point at what the model uses (the deletion
test of Petsiuk et al. 2018), are written for a person to look at, and the command prints one JSON line each."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import headstart
from headstart.api import explain
from headstart.cli import app
from headstart.errors import HeadstartError
from headstart.explain import deletion_check, explainer_for
from headstart.tasks import make_task


def make_square_images(root, per_class: int = 60, size: int = 32, seed: int = 0):
    """A red, green or blue square somewhere on grey noise: the class lives in one place of the image."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(60, 200, (size, size, 3)).astype(np.uint8)
            y, x = rng.integers(0, size - 10, 2)
            pixels[y:y + 10, x:x + 10] = np.eye(3, dtype=np.uint8)[c] * 255
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def square_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("squares")
    images = make_square_images(root / "images")
    model = headstart.fit(images, "smallcnn", "finetune", out=root / "run", epochs=2, test_size=30, cache=False)
    return model, images


@pytest.fixture(scope="module")
def text_model(tiny_text_run):
    """The shared tiny-BERT probe, with its temperature set back to 1: calibrated on an easy task its
    probabilities are all but 1.0, which no deletion can lower (attributions only scale with 1/T)."""
    model = headstart.load(tiny_text_run / "model")
    model.classifier.head.set_params({**model.classifier.head.params, "temperature": 1.0})
    return model, pd.read_csv(tiny_text_run.parent / "reviews.csv").text.tolist()


@pytest.mark.parametrize("method", ["occlusion", "gradcam"])
def test_deleting_the_hot_cells_hurts_more_than_random_cells(square_model, tmp_path, method):
    model, images = square_model
    assert model.metrics["accuracy"] >= 0.9
    explainer = explainer_for(model, method)
    assert explainer.name == method
    files = sorted(images.rglob("*.png"))[::9]
    explanations = explainer.explain(files)
    check = deletion_check(explainer, explanations, fraction=0.2, random_draws=3)
    assert check["n"] == 20 and check["share_top_beats_random"] >= 0.8, check
    png = explainer.save(explanations[0], tmp_path / f"x{explainer.file_suffix}")
    with Image.open(png) as picture:
        assert picture.mode == "RGB" and picture.width > 2 * picture.height > 2 * 224  # enlarged, side by side


def test_the_image_explanation_shows_the_image_beside_its_heat_map_and_a_colour_bar():
    """Readable alone: the left panel is the image itself (enlarged pixel for pixel), the right one differs from it
    where the heat is, and the bar on the right runs from jet's dark blue (0) at its foot to dark red at its top."""
    from matplotlib import colormaps

    from headstart.explain.image import COLOUR_BAR, MARGIN, TITLE_BAND, side_by_side_png

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (24, 32, 3)).astype(np.uint8))
    heat = np.zeros((7, 7), np.float32)
    heat[3, 3] = 0.4
    png = side_by_side_png(image, heat, "$cat$ <b>", 0.91, "occlusion", "fall in P(cat) when blurred")
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.mode == "RGB" and png.startswith(b"\x89PNG")
        pixels = np.asarray(picture).astype(int)
    width, height = 299, 224  # 24 px high is enlarged to 224, the width in proportion
    assert pixels.shape == (TITLE_BAND + height + MARGIN, 3 * MARGIN + 2 * width + COLOUR_BAR[1], 3)
    left = pixels[TITLE_BAND:TITLE_BAND + height, MARGIN:MARGIN + width]
    assert np.array_equal(left, np.asarray(image.resize((width, height), Image.NEAREST)))
    right = pixels[TITLE_BAND:TITLE_BAND + height, 2 * MARGIN + width:2 * (MARGIN + width)]
    jet = (np.array(colormaps["jet"]([0.0, 1.0]))[:, :3] * 255).astype(int)  # dark blue, dark red
    for (y, x), colour in (((112, 149), jet[1]), ((5, 5), jet[0])):  # the hot cell's centre, a cold corner
        assert np.abs(right[y, x] - (0.55 * left[y, x] + 0.45 * colour)).max() < 8
    bar = pixels[TITLE_BAND:TITLE_BAND + height, 3 * MARGIN + 2 * width + COLOUR_BAR[0] // 2]
    assert np.abs(bar[3] - jet[1]).max() < 30 and np.abs(bar[-3] - jet[0]).max() < 30


def test_the_token_snippet_has_a_legend_and_escapes_the_users_text(tmp_path):
    from headstart.explain.base import Explanation
    from headstart.explain.text import IntegratedGradientsExplainer

    explanation = Explanation("<script>alert(1)</script> café", "<i>spam</i>", 0, 0.87,
                              np.array([0.5, -0.25, 0.1], np.float32), units=["<script>", "alert", "café"])
    file = IntegratedGradientsExplainer.save(None, explanation, tmp_path / "t.tokens.html")
    snippet = file.read_bytes().decode("ascii")  # non-ASCII as character references: no charset needed
    assert "<script>" not in snippet and "&lt;script&gt;" in snippet and "caf&#233;" in snippet
    assert "<i>" not in snippet and "predicted <b>&lt;i&gt;spam&lt;/i&gt;</b> (0.87)" in snippet
    assert "red</span>: pushes towards <b>&lt;i&gt;spam" in snippet and "blue</span>: pushes against it" in snippet
    assert snippet.count("<span title=") == 3


def test_deleted_cells_show_the_image_blurred_at_the_cell_scale():
    """The deletion fill keeps a cell's average colour and removes its detail: a pixel checkerboard turns flat."""
    import torch

    from headstart.explain.image import blurred_at_cell_scale

    board = (torch.arange(64).view(8, 8).remainder(2) ^ torch.arange(64).view(8, 8).div(8, rounding_mode="floor")
             .remainder(2)).float()
    x = torch.nn.functional.interpolate(board[None, None], size=(224, 224), mode="nearest").repeat(1, 3, 1, 1)
    blurred = blurred_at_cell_scale(x, (7, 7))
    assert blurred.shape == x.shape
    assert abs(float(blurred.mean()) - float(x.mean())) < 0.02
    assert float(blurred[..., 32:-32, 32:-32].std()) < 0.1 * float(x.std())


def test_timm_cnns_explain_the_map_their_head_reads():
    """Grad-CAM's layer for a timm CNN is the last one before global pooling (EfficientNet's conv_head + bn2)."""
    from headstart.backbones.timm_image import TimmBackbone

    backbone = TimmBackbone.create("efficientnet_lite0", pretrained=False, image_size=32)
    assert backbone.explain_layer() is backbone.model.bn2


def test_integrated_gradients_deleting_the_top_tokens_hurts_more_than_random_tokens(text_model, tmp_path):
    model, texts = text_model
    explainer = explainer_for(model)
    explanations = explainer.explain(texts[:16])
    assert all(len(e.units) == len(e.attributions) > 0 for e in explanations)
    assert "[CLS]" not in explanations[0].units
    check = deletion_check(explainer, explanations, fraction=0.2, random_draws=3)
    assert check["share_top_beats_random"] >= 0.8, check
    snippet = explainer.save(explanations[0], tmp_path / "t.tokens.html").read_text()
    assert snippet.count("<span title=") == len(explanations[0].units) and explanations[0].label in snippet


def test_explain_command_prints_json_lines_and_writes_files(square_model, tmp_path):
    model, images = square_model
    files = [str(p) for p in sorted((images / "red").glob("*.png"))[:2]]
    result = CliRunner().invoke(app, ["explain", str(model.run_dir / "model"), *files, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["input"] for r in records] == files and all(r["label"] == "red" for r in records)
    assert all((tmp_path / r["file"]).is_file() and r["file"].endswith(".occlusion.png") for r in records)
    assert all(r["method"].startswith("occlusion") for r in records)  # the image default


def test_occlusion_needs_no_layer_from_the_backbone(square_model, monkeypatch):
    """Occlusion only runs the model, so it explains backbones that name no layer for gradient methods."""
    model, images = square_model

    def no_layer():
        raise HeadstartError("no layer named")

    monkeypatch.setattr(model.backbone, "explain_layer", no_layer)
    [explanation] = explainer_for(model, "occlusion").explain(sorted((images / "red").glob("*.png"))[:1])
    assert explanation.label == "red" and explanation.attributions.shape == (49,)
    with pytest.raises(HeadstartError, match="no layer named"):
        explainer_for(model, "gradcam").explain(sorted((images / "red").glob("*.png"))[:1])


def test_an_unknown_method_is_refused_with_the_choices(square_model):
    model, _ = square_model
    with pytest.raises(HeadstartError, match="no explanation method 'shap' for image models: choose one of "
                                             "gradcam, occlusion"):
        explainer_for(model, "shap")


def test_text_explain_ranks_tokens(text_model, tmp_path):
    model, _ = text_model
    [record] = explain(model, ["a wonderful and great film number 3"], out=tmp_path)
    assert len(record["top_tokens"]) == 5 and record["file"].endswith(".tokens.html")


def test_audio_models_are_refused_in_one_line():
    with pytest.raises(HeadstartError, match="not supported yet for audio"):
        explainer_for(SimpleNamespace(modality="audio", task=make_task()))
