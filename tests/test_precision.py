"""The inference precision `auto` picks (issue 26): per CPU kind, backbone family and batch size, from measurements
(benchmarks/precision_auto.py); never bfloat16 on a CPU without native bfloat16, and training's choice unchanged."""

from __future__ import annotations

import pytest
import torch

from headstart import _util
from headstart._util import describe_auto, inference_precision, resolve_precision
from headstart.errors import SettingsError

CPU = torch.device("cpu")
AMX = {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}  # a Sapphire Rapids Xeon
AVX512_BF16 = {"avx512f", "avx512_bf16"}  # an AMD EPYC (Zen 4): native bfloat16 dot products, no AMX
NO_BF16 = {"avx2", "fma"}  # an older CPU: autocast would only emulate bfloat16


def with_flags(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(_util, "cpu_flags", lambda: set(flags))


@pytest.mark.parametrize(("flags", "family", "batch", "expected"), [
    (AMX, "text", 1, "fp32"),  # one sentence: 16.0 ms in bf16 against 11.9 in fp32 (the measurement)
    (AMX, "text", 63, "fp32"),
    (AMX, "text", 64, "bf16"),
    (AMX, "audio", 1, "fp32"),
    (AMX, "audio", 64, "bf16"),
    (AMX, "image", 1, "fp32"),  # bf16 flipped 5% of efficientnet_lite0's predictions for at most 1.2x
    (AMX, "image", 64, "fp32"),
    (AVX512_BF16, "text", 1, "fp32"),
    (AVX512_BF16, "image", 1, "fp32"),
    (AVX512_BF16, "image", 64, "fp32"),
    (AVX512_BF16, "text", 128, "bf16"),
    (AVX512_BF16, "audio", 64, "bf16"),
    (NO_BF16, "text", 1, "fp32"),
    (NO_BF16, "image", 64, "fp32"),
    (NO_BF16, "audio", 512, "fp32"),
    (AMX, "tabular", 512, "fp32"),  # a family nobody measured: fp32
])
def test_auto_follows_the_measured_rule_for_each_cpu_family_and_batch(monkeypatch, flags, family, batch, expected):
    with_flags(monkeypatch, flags)
    assert inference_precision("auto", CPU, family, batch) == expected


def test_an_explicit_precision_is_kept_and_a_wrong_one_refused(monkeypatch):
    with_flags(monkeypatch, NO_BF16)
    assert inference_precision("bf16", CPU, "text", 1) == "bf16"
    assert inference_precision("fp32", CPU, "image", 64) == "fp32"
    with pytest.raises(SettingsError, match="must be one of auto, fp32, bf16"):
        inference_precision("fp8", CPU, "text", 1)


def test_training_keeps_bfloat16_wherever_the_cpu_has_it(monkeypatch):
    for flags, expected in ((AMX, "bf16"), (AVX512_BF16, "bf16"), (NO_BF16, "fp32")):
        with_flags(monkeypatch, flags)
        assert resolve_precision("auto", CPU) == expected


def test_the_rule_is_described_in_words(monkeypatch):
    with_flags(monkeypatch, AMX)
    assert describe_auto(CPU, "image") == "fp32"
    assert describe_auto(CPU, "text") == "fp32 below 64 items per batch, bf16 from 64"
    with_flags(monkeypatch, NO_BF16)
    assert describe_auto(CPU, "text") == "fp32"


def test_the_cpu_flags_are_read_from_the_flags_line(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC with avx512_bf16 in its name\nflags\t\t: fpu avx2 avx512f\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path,
                                                                          *a, **k))
    assert _util.cpu_flags() == {"fpu", "avx2", "avx512f"}
    assert _util.cpu_bf16_kind() is None  # the model name's words are not flags


@pytest.fixture(scope="module")
def text_probe(tmp_path_factory):
    """A probe on a tiny BERT over 40 sentences (16 test sentences), fitted once for the checks below."""
    import headstart

    from .conftest import make_tiny_bert, write_text_table

    root = tmp_path_factory.mktemp("precision")
    table = write_text_table(root / "reviews.csv", n_per_class=20)
    headstart.fit(table, str(make_tiny_bert(root / "bert")), "probe", out=root / "run", max_length=32, cache=False,
                  val_size=8, test_size=16)
    return root / "run" / "model", table


def test_evaluate_states_what_auto_resolved_to_for_its_items(monkeypatch, text_probe):
    import headstart

    model, table = text_probe
    with_flags(monkeypatch, AMX)
    assert headstart.evaluate(model, table, precision="auto")["evaluation_precision"] == "fp32"  # 16 sentences
    assert headstart.load(model).evaluation_precision("auto", 128) == "bf16"
    with_flags(monkeypatch, NO_BF16)
    assert headstart.load(model).evaluation_precision("auto", 128) == "fp32"
    assert headstart.evaluate(model, table, precision="bf16")["evaluation_precision"] == "bf16"


def test_predict_states_and_records_what_auto_resolved_to(monkeypatch, text_probe, caplog, tmp_path):
    import json
    import logging

    from typer.testing import CliRunner

    from headstart.cli import app

    model, _ = text_probe
    with_flags(monkeypatch, AMX)
    runner = CliRunner()
    with caplog.at_level(logging.INFO, logger="headstart"):
        one = runner.invoke(app, ["predict", str(model), "a lovely film", "--precision", "auto"])
        assert one.exit_code == 0, one.output
        assert "predicting in fp32 (auto, for this batch size)" in caplog.text
        caplog.clear()
        texts = [f"a dull film number {i}" for i in range(70)]
        many = runner.invoke(app, ["predict", str(model), *texts, "--precision", "auto", "--batch-size", "64"])
        assert many.exit_code == 0, many.output
        assert "predicting in bf16 (auto, for this batch size)" in caplog.text
        assert len(many.stdout.splitlines()) == 70
        caplog.clear()
        default = runner.invoke(app, ["predict", str(model), "a lovely film"])
        assert default.exit_code == 0 and "predicting in fp32" in caplog.text and "auto" not in caplog.text
    assert json.loads(one.stdout.splitlines()[0])["label"] in ("positive", "negative")
