"""Token tagging (issue 23): CoNLL reading and its checks, sub-word alignment and windows, entity offsets, and one
tiny end-to-end fit shared by the predict, save/load, evaluate and serve checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.data import data_task, load_data
from headstart.errors import DataError, SettingsError
from headstart.runtime.entities import WordScores, entities, find_words, tag_chunks
from headstart.runtime.token_windows import encode_windows, window_overlap
from headstart.tasks import make_task
from headstart.tasks.tokens import IGNORE, window_labels

from .conftest import HANG_GUARD_S, make_tiny_bert

PEOPLE = ["Alice", "Bob", "Zoë", "Jürgen", "Mary"]
PLACES = ["Paris", "Zürich", "London", "São Paulo"]


def write_conll(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Sentences "met PERSON in PLACE today ." with BIO tags; breaks alternate between an empty line and a lone
    TAB (as in WNUT-17), after a -DOCSTART- line."""
    rng = np.random.default_rng(seed)
    lines = ["-DOCSTART- -X- O O", ""]
    for i in range(n):
        place = PLACES[rng.integers(len(PLACES))].split()
        words = [("met", "O"), (PEOPLE[rng.integers(len(PEOPLE))], "B-PER"), ("in", "O")]
        words += [(w, "B-LOC" if j == 0 else "I-LOC") for j, w in enumerate(place)] + [("today", "O"), (".", "O")]
        lines += [f"{w}\t{t}" for w, t in words] + ["\t" if i % 2 else ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from headstart.backbones.hf_text import minilm_location

    return AutoTokenizer.from_pretrained(minilm_location(), local_files_only=True)


# -- reading ---------------------------------------------------------------------------------------------------------
def test_conll_files_are_read_with_tab_breaks_docstart_and_extra_columns(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_text("-DOCSTART- -X- O O\n\nZoë NNP B-PER\nruns VBZ O\n\t\nin IN O\nSão NNP B-LOC\nPaulo NNP I-LOC\n"
                    "  \n\nok UH O\n", encoding="utf-8")
    data = load_data(path, task=make_task("tokens")).train
    assert data.items == ["Zoë runs", "in São Paulo", "ok"]
    assert data.classes == ["O", "B-LOC", "B-PER", "I-LOC"]
    assert data.labels.tolist() == [[2, 0, IGNORE], [0, 1, 3], [0, IGNORE, IGNORE]]
    assert data_task(path) == "tokens" and data_task(data) == "tokens"  # a Dataset keeps its task for fit


def test_a_txt_file_of_conll_shape_and_a_folder_of_them_choose_the_task(tmp_path):
    write_conll(tmp_path / "train.txt", n=5)
    write_conll(tmp_path / "dev.txt", n=3, seed=1)
    (tmp_path / "notes.txt").write_text("just some text\nwith lines\n")
    assert data_task(tmp_path) == "tokens" and data_task(tmp_path / "notes.txt") is None
    splits = load_data(tmp_path, task=make_task("tokens"))
    assert (len(splits.train), len(splits.val)) == (5, 3)


def test_a_table_of_token_and_tag_lists(tmp_path):
    table = tmp_path / "ner.jsonl"
    rows = [{"tokens": ["Zoë", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]},
            {"tokens": ["hello"], "tags": ["O"]}]
    table.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    data = load_data(table, task=make_task("tokens")).train
    assert data.items == ["Zoë lives in Paris", "hello"] and data.classes == ["O", "B-LOC", "B-PER"]
    pair = load_data(([r["tokens"] for r in rows], [r["tags"] for r in rows]), task=make_task("tokens")).train
    assert pair.items == data.items and pair.labels.tolist() == data.labels.tolist()  # in memory, the same
    csv = tmp_path / "ner.csv"
    csv.write_text('tokens,tags\n"[""a"", ""b""]","[""O""]"\n')
    with pytest.raises(DataError, match="row 1 has 2 tokens but 1 tags"):
        load_data(csv, task=make_task("tokens"))


@pytest.mark.parametrize(("content", "message"), [
    ("Zoë\nruns\n", r"line 1 \('Zoë'\) has no tag"),
    ("Zoë NNP B-PER\nruns O\n", "line 2 has 2 columns but line 1 has 3"),
    ("a O\nb O\n\nc O\n", "every word has the tag O"),
    ("Zoë B-PER\nruns PER\n", "line 2: tag 'PER' is not a BIO/BIOES tag"),
    ("in O\nParis I-LOC\n", "line 2: I-LOC follows O .*--repair-tags"),
    ("Zoë B-PER\nParis I-LOC\n", "line 2: I-LOC follows B-PER"),
    ("\n\t\n-DOCSTART- O\n", "holds no tokens"),
])
def test_bad_conll_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.conll"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as error:
        load_data(path, task=make_task("tokens"))
    assert "\n" not in str(error.value)


def test_repair_tags_starts_the_entity_and_only_when_asked(tmp_path, caplog):
    path = tmp_path / "ner.conll"
    path.write_text("in O\nSão I-LOC\nPaulo I-LOC\n\nZoë B-PER\nhi O\n", encoding="utf-8")
    data = load_data(path, task=make_task("tokens", repair_tags=True)).train
    assert [data.classes[i] for i in data.labels[0]] == ["O", "B-LOC", "I-LOC"]
    assert "1 tag(s)" in caplog.text


def test_conll_data_refuse_an_item_level_task_and_a_one_class_strategy(tmp_path):
    path = write_conll(tmp_path / "ner.conll", n=10)
    with pytest.raises(DataError, match="use --task tokens"):
        load_data(path, task=make_task("classification"))
    with pytest.raises(SettingsError, match="trains classification only, not --task tokens"):
        headstart.fit(path, "minilm", "contrastive")


# -- alignment -------------------------------------------------------------------------------------------------------
def test_a_word_split_in_sub_words_is_labeled_on_its_first_piece_only(tokenizer):
    words = ["Zoë", "unbelievablyxyz", "visited", "@someone"]
    (window,) = encode_windows(tokenizer.backend_tokenizer, [words], max_length=32)
    pieces = tokenizer.convert_ids_to_tokens(window.inputs["input_ids"])
    assert pieces.count("[CLS]") == 1 and len(pieces) > len(words) + 2  # "unbelievablyxyz" is several pieces
    labels = window_labels([window], np.array([[1, 2, 0, 3]]), len(pieces))[0].tolist()
    labeled = [(pieces[j], y) for j, y in enumerate(labels) if y != IGNORE]
    assert labeled == [("zoe", 1), ("un", 2), ("visited", 0), ("@", 3)]


def test_a_sentence_longer_than_the_window_is_split_with_overlap_and_each_word_owned_once(tokenizer):
    words = [f"word{i}" if i % 3 else "unbelievablyxyz" for i in range(40)]
    windows = encode_windows(tokenizer.backend_tokenizer, [["short", "one"], words], max_length=16)
    long = [w for w in windows if w.sentence == 1]
    assert len(long) > 3 and all(len(w.inputs["input_ids"]) <= 16 for w in windows)
    owned = sorted(word for w in long for _, word in w.owned)
    assert owned == list(range(40))  # every word once, in one window
    for w in long:  # a window's owned position is the first piece of its word
        pieces = tokenizer.convert_ids_to_tokens(w.inputs["input_ids"])
        for position, word in w.owned:
            assert not pieces[position].startswith("##") and words[word].lower().startswith(pieces[position])
    overlap = window_overlap(16)  # consecutive windows share sub-words: context on both sides of a cut
    for a, b in zip(long, long[1:]):
        assert a.inputs["input_ids"][-1 - overlap:-1] == b.inputs["input_ids"][1:1 + overlap]


# -- entities --------------------------------------------------------------------------------------------------------
def test_entity_offsets_are_exact_on_the_input_including_non_ascii():
    text = "Yesterday  Zoë Ünal met them in São Paulo, near 東京!"
    spans = find_words(text)
    words = [text[a:b] for a, b in spans]
    assert words[:4] == ["Yesterday", "Zoë", "Ünal", "met"] and "," in words and "東京" in words
    classes = ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    tags = {"Zoë": "B-PER", "Ünal": "I-PER", "São": "B-LOC", "Paulo": "I-LOC", "東京": "B-LOC"}
    probs = np.zeros((len(words), len(classes)), np.float32)
    for i, w in enumerate(words):
        probs[i, classes.index(tags.get(w, "O"))] = 0.9
    found = entities(WordScores(text, spans, probs), classes)
    assert [(e["type"], e["text"]) for e in found] == [("PER", "Zoë Ünal"), ("LOC", "São Paulo"), ("LOC", "東京")]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in found)
    assert found[0]["score"] == pytest.approx(0.9)


def test_type_confusion_says_what_each_entity_was_taken_for():
    from headstart.tasks.tokens import type_confusion

    gold = [["B-A", "I-A", "O", "B-B"], ["O", "B-A"]]
    got = [["B-B", "I-B", "O", "O"], ["B-A", "B-A"]]
    assert type_confusion(gold, got) == {"A": {"B": 1, "A": 1}, "B": {"(missed)": 1}, "(none)": {"A": 1}}


def test_chunks_match_seqeval():
    from seqeval.metrics.sequence_labeling import get_entities

    for tags in (["B-A", "I-A", "O", "I-B", "I-B", "B-B", "I-A"], ["S-A", "B-B", "E-B", "O", "E-A"]):
        assert [(k, a, b) for k, a, b in tag_chunks(tags)] == get_entities(tags)


# -- end to end ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_run(tmp_path_factory) -> Path:
    """One tiny finetune on generated CoNLL sentences (the task, and with it the strategy, chosen from the file),
    tested on other ones."""
    root = tmp_path_factory.mktemp("tokens")
    train, test = write_conll(root / "train.conll", 150), write_conll(root / "test.conll", 40, seed=1)
    bert = make_tiny_bert(root / "tiny-bert")
    headstart.fit(train, str(bert), test=test, out=root / "run", max_length=12, epochs=3, lr=3e-3,
                  batch_size=16, cache=False)
    return root / "run"


def test_fit_reports_entity_metrics_as_seqeval_computes_them(token_run):
    from seqeval.metrics import f1_score

    metrics = json.loads((token_run / "metrics.json").read_text())
    assert metrics["task"] == "tokens" and metrics["n"] == 40
    assert {"f1", "precision", "recall", "token_accuracy", "per_type"} <= set(metrics)
    assert set(metrics["per_type"]) == {"PER", "LOC"} and metrics["entities"] == 80
    confusion = metrics["type_confusion"]  # every true entity once, by what was predicted over its span
    assert sum(sum(confusion.get(kind, {}).values()) for kind in ("PER", "LOC")) == 80
    model = headstart.load(token_run)
    assert model.task_name == "tokens" and model.manifest.strategy.name == "finetune"  # the task's default
    assert metrics["f1"] > 0.5  # learnable: fixed words around the entities
    test = load_data(token_run.parent / "test.conll", task=model.task, classes=model.classes).train
    scores, _ = model.scores(test.items)  # raw text: the regex finds the same words here (no punctuation inside)
    got = [s.tags(model.classes) for s in scores]
    gold = [[model.classes[i] for i in row if i != IGNORE] for row in test.labels]
    assert f1_score(gold, got) == pytest.approx(metrics["f1"])


def test_predict_gives_entities_with_exact_offsets_and_survives_save_and_load(token_run, tmp_path):
    model = headstart.load(token_run)
    texts = ["Yesterday I met Zoë in São Paulo, then Jürgen in Zürich!", "", "nothing here"]
    predicted = model.predict(texts)
    assert predicted[1] == [] and len(predicted) == 3
    assert predicted[0], "the tiny model finds some entity in a training-like sentence"
    for text, found in zip(texts, predicted):
        for e in found:
            assert text[e["start"]:e["end"]] == e["text"] and e["type"] in ("PER", "LOC") and 0 < e["score"] <= 1
    model.save(tmp_path / "copy")
    assert headstart.load(tmp_path / "copy").predict(texts) == predicted


def test_evaluate_json_and_predict_from_the_command_line(token_run):
    from typer.testing import CliRunner

    from headstart.cli import app

    runner = CliRunner()
    evaluated = runner.invoke(app, ["evaluate", str(token_run / "model"), str(token_run.parent / "test.conll"),
                                    "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert metrics["task"] == "tokens" and 0 <= metrics["f1"] <= 1 and "per_type" in metrics
    predicted = runner.invoke(app, ["predict", str(token_run / "model"), "Zoë met Bob in Paris ."])
    assert predicted.exit_code == 0, predicted.output
    record = json.loads(predicted.stdout.splitlines()[0])
    assert record["input"] == "Zoë met Bob in Paris ." and isinstance(record["entities"], list)


def test_serve_answers_the_same_entities(token_run):
    from fastapi.testclient import TestClient

    from headstart.serving import build_app

    texts = ["Yesterday I met Zoë in São Paulo.", "met Mary in London today ."]
    expected = headstart.load(token_run).predict(texts)
    with TestClient(build_app(token_run / "model", runtime="torch")) as client:
        response = client.post("/predict", json={"inputs": texts})
    assert response.status_code == 200
    assert [p["entities"] for p in response.json()["predictions"]] == expected


def test_lora_trains_adapters_for_tokens_and_reloads_them(token_run, tmp_path):
    bert = token_run.parent / "tiny-bert"
    model = headstart.fit(token_run.parent / "train.conll", str(bert), "lora", out=tmp_path / "run", max_length=12,
                          epochs=1, lr=3e-3, batch_size=16, cache=False, val_size=20, test_size=20)
    assert model.manifest.training["lora"]["adapter_parameters"] > 0
    texts = ["met Zoë in São Paulo today ."]
    assert headstart.load(tmp_path / "run").predict(texts) == model.predict(texts)


# -- export ----------------------------------------------------------------------------------------------------------
LONG = ("Yesterday I met Zoë and Jürgen in São Paulo , then Mary in Zürich , Bob in London and Alice in Paris , "
        "all of them today .")  # far more sub-words than the tiny fit's window of 12


@pytest.fixture(scope="module")
def token_graphs(token_run):
    """The tiny tagger exported once in fp32 and once in int8 (forced: a tiny model's F1 moves by whole points)."""
    from headstart.export import export_onnx

    return export_onnx(token_run / "model"), export_onnx(token_run / "model", quantize="int8", force=True)


def test_export_parity_of_a_token_model_on_every_window_of_a_long_sentence(token_run, token_graphs):
    import onnxruntime as ort
    import torch

    from headstart.runtime.token_windows import pad_windows
    from headstart.tasks.tokens import backbone_windows

    fp32, _ = token_graphs
    assert fp32.parity["max_abs_diff"] <= 1e-4 and fp32.parity["top1_agreement"] == 1.0
    assert fp32.parity["sub_words"] > fp32.parity["items"] > 2
    assert json.loads(fp32.sidecar.read_text())["task"] == "tokens"
    model = headstart.load(token_run)
    windows = backbone_windows(model.backbone, [LONG.split(" ")])
    assert len(windows) > 3
    feeds = pad_windows(windows, int(model.backbone.tokenizer.pad_token_id or 0))
    feeds = {k: feeds[k] for k in ("input_ids", "attention_mask")}
    graph = ort.InferenceSession(str(fp32.graph), providers=["CPUExecutionProvider"]).run(["probabilities"], feeds)[0]
    with torch.inference_mode():
        reference = model.classifier.eval().scores({k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
    real = feeds["attention_mask"].astype(bool)  # the tag logits of every real sub-word, windows of several lengths
    assert graph.shape == reference.shape and np.abs(graph - reference)[real].max() <= 1e-4


TEXTS = [LONG, "Yesterday I met Zoë in São Paulo, then Jürgen in Zürich!", "", "met Mary in London today ."]


def _spans(found: list[list[dict]]) -> list[list[tuple]]:
    return [[(e["type"], e["start"], e["end"], e["text"]) for e in entities_] for entities_ in found]


def test_onnx_predicts_the_entities_pytorch_does_with_exact_offsets(token_run, token_graphs):
    from headstart.runtime import load as load_graph

    pytorch, onnx = headstart.load(token_run, precision="fp32").predict(TEXTS), load_graph(token_run / "model")
    got = onnx.predict(TEXTS)
    assert _spans(got) == _spans(pytorch) and any(pytorch)
    assert all(a["score"] == pytest.approx(b["score"], abs=1e-4) for x, y in zip(got, pytorch) for a, b in zip(x, y))
    for text, found in zip(TEXTS, got):
        assert all(text[e["start"]:e["end"]] == e["text"] for e in found)  # non-ASCII offsets in code points
    int8 = load_graph(token_run / "model", int8=True)
    fp32_tags = [t for s in onnx.scores(TEXTS)[0] for t in s.tags(onnx.classes)]
    int8_tags = [t for s in int8.scores(TEXTS)[0] for t in s.tags(int8.classes)]
    assert len(int8_tags) == len(fp32_tags) > 40 and np.mean(np.array(int8_tags) == np.array(fp32_tags)) >= 0.8
    assert int8.manifest.precision == "int8" and "drop_points" in int8.manifest.quantization


def test_the_onnx_path_of_a_token_model_imports_no_training_stack(token_run, token_graphs):
    import subprocess
    import sys

    code = ("import sys, json\nfrom headstart.runtime import load\n"
            f"print(json.dumps(load({str(token_run / 'model')!r}).predict([{TEXTS[1]!r}])[0]))\n"
            "print(json.dumps([k for k in ('torch', 'transformers', 'lightning', 'timm') if k in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S,
                         check=True)
    found, heavy = out.stdout.strip().splitlines()
    assert isinstance(json.loads(found), list) and json.loads(heavy) == []


def test_serve_with_the_onnx_runtime_answers_the_json_pytorch_serving_does(token_run, token_graphs):
    from fastapi.testclient import TestClient

    from headstart.serving import build_app

    answers = {}
    for runtime in ("torch", "onnx"):
        with TestClient(build_app(token_run / "model", runtime=runtime)) as client:
            response = client.post("/predict", json={"inputs": TEXTS})
        assert response.status_code == 200, response.text
        answers[runtime] = [p["entities"] for p in response.json()["predictions"]]
    assert _spans(answers["onnx"]) == _spans(answers["torch"]) and any(answers["onnx"])
