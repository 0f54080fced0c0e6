"""Token tagging, issue 23 continued: the probe on frozen token states, and the report of a token model. One tiny
probe fit on generated CoNLL sentences is shared by every check here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.data import load_data

from .conftest import make_tiny_bert
from .test_tokens import write_conll

# A test sentence with markup in its words, which the report must show as text. "today" is always O in training, so
# the model misses it as a place here: the sentence is a mistake the report lists.
MARKUP = ["met\tO", "<b>Zoë</b>\tB-PER", "in\tO", "Paris&Co\tB-LOC", "today\tB-LOC", ".\tO", ""]


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tokens-probe")
    train, test = write_conll(root / "train.conll", 150), write_conll(root / "test.conll", 40, seed=1)
    with test.open("a", encoding="utf-8") as f:
        f.write("\n" + "\n".join(MARKUP) + "\n")
    bert = make_tiny_bert(root / "tiny-bert")
    headstart.fit(train, str(bert), "probe", test=test, out=root / "run", max_length=12, cache=False)
    return root / "run"


def test_the_probe_trains_a_head_on_frozen_word_states_that_predicts_like_a_finetuned_tagger(probe_run, tmp_path):
    import torch

    from headstart.model import class_scores

    model = headstart.load(probe_run)
    assert model.task_name == "tokens" and model.manifest.strategy.name == "probe"
    assert model.manifest.training["head_stage"]["val_metric"] == "val_f1"
    assert model.metrics["f1"] > 0.5  # learnable from word identity even on a random encoder
    # The backbone stayed as loaded: the saved model's encoder is the tiny BERT's own.
    from transformers import BertModel

    original = BertModel.from_pretrained(probe_run.parent / "tiny-bert").state_dict()
    tuned = model.classifier.backbone.model.state_dict()
    assert all(torch.equal(original[k], tuned[k]) for k in original)
    # What the head trained on is what prediction feeds it: its scores on the frozen word states are the model's.
    test = load_data(probe_run.parent / "test.conll", task=model.task, classes=model.classes).train
    states = model.task.frozen_features(model.classifier.backbone, test.items, test.labels, "fp32")
    assert states.shape == (*test.labels.shape, model.classifier.head.config["in_dim"])
    on_states = model.classifier.head.probabilities(states)
    scores, _ = class_scores(model.classifier, test.items, "fp32", words_given=True)  # as evaluate scores them
    for i, sentence in enumerate(scores):
        np.testing.assert_allclose(on_states[i, :len(sentence.probs)], sentence.probs, atol=1e-5)
    texts = ["Yesterday I met Zoë in São Paulo, then Jürgen in Zürich!", ""]
    predicted = model.predict(texts)
    for text, found in zip(texts, predicted):
        assert all(text[e["start"]:e["end"]] == e["text"] for e in found)
    model.save(tmp_path / "copy")
    assert headstart.load(tmp_path / "copy").predict(texts) == predicted


def test_the_report_of_a_token_model_has_the_evaluate_figures_and_escaped_highlighted_mistakes(probe_run, tmp_path):
    from typer.testing import CliRunner

    from headstart.cli import app

    runner = CliRunner()
    evaluated = runner.invoke(app, ["evaluate", str(probe_run), str(probe_run.parent / "test.conll"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    reported = runner.invoke(app, ["report", str(probe_run), "--out", str(tmp_path / "report.html")])
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    cells = [f"<td>{metrics[k]:.4f}</td>" for k in ("f1", "precision", "recall", "macro_f1", "token_accuracy")]
    cells += [f"<td>{v[k]:.4f}</td>" for v in metrics["per_type"].values() for k in ("precision", "recall", "f1")]
    assert all(c in page for c in cells), [c for c in cells if c not in page]
    assert f"entity F1 {metrics['f1']:.4f}" in page  # the subtitle
    confusion = metrics["type_confusion"]
    assert f"<td>PER</td><td>{confusion['PER'].get('LOC', 0)}</td><td>{confusion['PER'].get('PER', 0)}</td>" in page
    # The markup in the words is text, and the mistakes mark entities inside the sentence.
    assert "<b>Zoë" not in page and "&lt;b&gt;Zoë&lt;/b&gt;" in page and "Paris&amp;Co" in page
    assert '&lt;b&gt;Zoë&lt;/b&gt;<span class="type">PER</span></mark>' in page  # the true line marks it
    assert '<mark class="entity miss">today<span class="type">LOC</span></mark>' in page
    assert 'id="learning"' in page and "Sentences with mistakes" in page
