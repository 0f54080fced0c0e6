"""`audit` and `suggest` (issue 24): label errors on separable data, duplicates and leaks across fit's splits, the
blocked similarity scan, outliers, TypiClust's coverage, the clean table and the table to label that `fit` reads,
one-line errors and an HTML page that escapes user text."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headstart
from headstart.api import prepare_splits
from headstart.auditing.data_audit import items_to_keep
from headstart.auditing.label_errors import classes_too_small, confident_learning, probe_judgement
from headstart.auditing.outliers import find_outliers, outlier_scores
from headstart.auditing.similarity import scan, unit_rows
from headstart.auditing.suggestions import badge, balanced_order, kmeans, typiclust
from headstart.cli import app
from headstart.data import load_data

from .conftest import make_image_folder, make_tiny_bert, write_text_table

SCRIPT = "<script>alert('x')</script> a delightful and superb film"


def _blobs(n_per: int, centers: int, d: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, d)) * 6
    labels = np.repeat(np.arange(centers), n_per)
    return means[labels] + spread * rng.standard_normal((len(labels), d)), labels


def find_label_errors(x: np.ndarray, given: np.ndarray, classes: list[str]):
    """audit's default judgement: confident learning on the probe's out-of-fold probabilities."""
    probs, judged_by = probe_judgement(x, given, seed=0)
    return confident_learning(given, probs, classes, judged_by)


def test_classes_too_small_to_hold_one_out_say_which():
    assert classes_too_small(np.array([0, 0, 0]), ["a", "b"]) == \
        "label errors not checked: the labels name fewer than two classes"
    assert classes_too_small(np.array([0, 0, 1, 0]), ["a", "b"]) == \
        "label errors not checked: every class needs at least two items (b has 1)"
    assert classes_too_small(np.array([0, 1, 1, 0]), ["a", "b"]) is None


def test_flipped_labels_are_found_with_their_true_class():
    x, true = _blobs(80, 3, 16, 1.0)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(true), 24, replace=False)
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, 3, len(flipped))) % 3
    found = find_label_errors(x, given, ["a", "b", "c"])
    flagged = set(found.flagged.tolist())
    assert len(flagged & set(flipped.tolist())) >= 0.9 * len(flipped)  # recall
    assert len(flagged - set(flipped.tolist())) <= 0.1 * len(flagged)  # precision
    suggested = dict(zip(found.flagged.tolist(), found.suggested.tolist()))
    assert all(suggested[i] == true[i] for i in flipped if i in suggested)
    assert found.probabilities.shape == (len(true), 3)


def test_labels_between_two_overlapping_classes_are_ambiguous_not_errors():
    """Classes a and b overlap (one axis apart by less than their spread), c and d are far from everything, with
    10% of each labeled as the other: those are likely errors; the issues between a and b keep a probability of
    their label above chance (1/4), so they are reported as ambiguous, and the likely errors are more precise than
    confident learning's issues."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)) * 6
    shift = np.zeros(16)
    shift[0] = 0.6
    x = np.concatenate([centres[0] - shift + rng.standard_normal((100, 16)),
                        centres[0] + shift + rng.standard_normal((100, 16)),
                        centres[1] + rng.standard_normal((100, 16)), centres[2] + rng.standard_normal((100, 16))])
    given = np.repeat(np.arange(4), 100)
    errors = np.concatenate([np.arange(200, 210), np.arange(300, 310)])
    given[errors] = 5 - given[errors]  # c <-> d
    found = find_label_errors(x, given, ["a", "b", "c", "d"])
    flagged, ambiguous = set(found.flagged.tolist()), set(found.ambiguous.tolist())
    assert len(flagged & set(errors.tolist())) >= 15
    assert len(ambiguous) >= 5 and ambiguous <= set(range(200))  # only a/b items are ambiguous
    precision = len(flagged & set(errors.tolist())) / len(flagged)
    assert precision > len((flagged | ambiguous) & set(errors.tolist())) / len(flagged | ambiguous)
    assert (found.label_quality < 1 / 4).all() and (found.ambiguous_quality >= 1 / 4).all()
    assert not flagged & ambiguous


def test_a_strategy_fitted_on_the_other_folds_judges_the_labels(tmp_path, planted):
    """strategy='probe': fit's probe on each four folds predicts the fifth; the flipped sentences are found as
    the class they really are, and the notes say what judged them."""
    table = pd.read_csv(write_text_table(tmp_path / "all.csv", n_per_class=40))
    flipped = [3, 10, 25, 50, 61, 77]
    true = table.label[flipped].tolist()
    table.loc[flipped, "label"] = ["negative" if label == "positive" else "positive" for label in true]
    table.to_csv(tmp_path / "noisy.csv", index=False)
    found = headstart.audit(tmp_path / "noisy.csv", str(planted["bert"]), strategy="probe", epochs=20, lr=1e-2, max_length=32)
    errors = {r["index"]: r["suggested"] for r in found.of_kind("label_error")}
    assert len(set(errors) & set(flipped)) >= 4
    assert all(errors[i] == label for i, label in zip(flipped, true) if i in errors)
    assert any("probe of" in note and "fitted on the other folds (5 folds), which agree with" in note
               for note in found.notes)


@pytest.mark.parametrize("screen", [None, "bfloat16"])
def test_the_blocked_scan_finds_what_the_full_matrix_shows(screen):
    import torch

    screen = screen and getattr(torch, screen)  # the bfloat16 screen rescores its candidates in float32: exact
    rng = np.random.default_rng(0)
    unit = unit_rows(rng.standard_normal((90, 8)))
    unit[40] = unit[7]  # one pair at similarity 1
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    found = scan(unit, None, 0.8, k=4, block_bytes=4 * 90 * 7, screen=screen)  # 7 rows a block
    expected = {(i, j) for i, j in zip(*np.nonzero(full >= 0.8)) if i < j}
    assert {tuple(p) for p in found.pairs.tolist()} == expected and (7, 40) in expected
    assert np.allclose(found.neighbour_similarity, -np.sort(-full, axis=1)[:, :4], atol=1e-5)
    other = unit_rows(rng.standard_normal((30, 8)))
    across = scan(unit, other, 0.7, block_bytes=4 * 30 * 11, screen=screen)
    expected = set(zip(*np.nonzero(unit @ other.T >= 0.7)))
    assert {tuple(p) for p in across.pairs.tolist()} == expected


def test_items_far_from_all_others_are_outliers():
    x, _ = _blobs(60, 3, 64, 1.0)  # embeddings have many dimensions: no item sits at their mean
    far = 10 * np.random.default_rng(2).standard_normal((2, 64))
    unit = unit_rows(np.vstack([x, far]), x.mean(axis=0))
    scores = outlier_scores(scan(unit, None, None, k=10).neighbour_similarity)
    assert sorted(find_outliers(scores).tolist()) == [180, 181]


def test_typiclust_takes_one_item_of_each_uncovered_cluster():
    x, blob = _blobs(40, 6, 8, 0.5, seed=3)
    unit = unit_rows(x, x.mean(axis=0))
    candidate = np.ones(len(x), dtype=bool)
    chosen, reasons, clusters = typiclust(unit, candidate, 6, seed=0)
    assert clusters == 6 and sorted(blob[chosen].tolist()) == list(range(6))
    assert all("TypiClust" in r for r in reasons)
    candidate[blob == 0] = candidate[blob == 1] = False  # two blobs hold labeled items already
    candidate[np.flatnonzero(blob == 0)[1:]] = candidate[np.flatnonzero(blob == 1)[1:]] = True
    chosen, _, clusters = typiclust(unit, candidate, 4, seed=0)
    assert clusters == 6 and sorted(blob[chosen].tolist()) == [2, 3, 4, 5]


def test_with_known_labels_the_least_labeled_classes_are_taken_first_largest_cluster_first_on_ties():
    x, blob = _blobs(20, 3, 8, 0.5, seed=4)
    labeled = np.concatenate([np.flatnonzero(blob == 0)[:5], np.flatnonzero(blob == 1)[:2], np.flatnonzero(blob == 2)[:1]])
    labels = np.array(["a"] * 5 + ["b"] * 2 + ["c"])
    options = x[[np.flatnonzero(blob == b)[10] for b in (0, 0, 1, 2, 1)]]  # TypiClust's order: largest cluster first
    picks, likely = balanced_order(x[labeled], labels, options, 4)
    assert picks == [3, 2, 4, 0]  # c (1 label), b (2), b again (3), then a (5): the larger of its clusters
    assert likely == ["c, which had 1 label", "b, which had 2 labels", "b, which had 3 labels", "a, which had 5 labels"]
    candidate = np.ones(len(x), dtype=bool)
    candidate[labeled] = False
    plain, _, _ = typiclust(x, candidate, 3, seed=0)
    balanced, reasons, _ = typiclust(x, candidate, 3, seed=0, labels=labels)
    assert len(set(balanced)) == 3 and not set(balanced) & set(labeled.tolist())
    assert blob[balanced[0]] == 2 and reasons[0].endswith("(TypiClust); likely c, which had 1 label")
    assert typiclust(x, candidate, 3, seed=0, labels=np.array(["a"] * len(labels)))[0] == plain  # one class: as before


def test_badge_picks_uncertain_items_across_the_data_the_longest_gradient_first_and_no_copy_twice():
    x, blob = _blobs(40, 6, 8, 0.5, seed=3)
    probabilities = np.tile([0.99, 0.01], (len(x), 1))
    uncertain = np.flatnonzero(np.arange(len(x)) % 10 == 0)  # 24 items, four in each blob
    probabilities[uncertain] = [0.55, 0.45]
    x[uncertain[1:4]] = x[uncertain[0]]  # three copies of one uncertain item
    x[uncertain[5]] *= 1.5  # the longest gradient: uncertain, with the largest features
    candidate = np.ones(len(x), dtype=bool)
    candidate[uncertain[-1]] = False  # labeled already
    chosen, reasons, _ = badge(x, probabilities, candidate, 8, ["p", "q"], seed=0)
    assert chosen[0] == uncertain[5] and len(set(chosen)) == 8
    # confident items have gradients near zero, alike: one of them at most stands for them all
    assert uncertain[-1] not in chosen and len(set(chosen) - set(uncertain.tolist())) <= 1
    assert len(set(chosen) & set(uncertain[:4].tolist())) <= 1  # a copy of a chosen item is never chosen again
    assert len(set(blob[chosen])) >= 5 and "BADGE" in reasons[0] and "p 0.55, q 0.45" in reasons[0]
    assert [r.startswith("less sure than most") for r in reasons] == [i in uncertain for i in chosen]


def test_few_clusters_keep_the_best_of_several_kmeans_runs_and_find_every_blob():
    rng = np.random.default_rng(0)  # one k-means++ run splits a blob and merges two others for 2 of these 20 seeds
    blob = np.repeat(np.arange(8), 25)
    x = (rng.standard_normal((8, 16)) * 3)[blob] + rng.standard_normal((len(blob), 16))
    for seed in range(20):
        ids = kmeans(x, 8, seed)
        assert all(len(set(ids[blob == b])) == 1 for b in range(8)) and len(set(ids)) == 8, seed


def test_the_clean_table_keeps_the_first_kept_copy_of_each_duplicate():
    pair = [("duplicate", 1, 2), ("leak", 3, 2), ("duplicate", 4, 5), ("conflicting", 6, 5), ("conflicting", 9, 10)]
    records = [{"kind": "label_error", "index": 2}, {"kind": "against", "index": 7},
               {"kind": "ambiguous_label", "index": 0}]
    records += [{"kind": kind, "index": a, "other_index": b, "exact": kind != "conflicting" or a == 6}
                for kind, a, b in pair]
    readable = np.ones(11, dtype=bool)
    readable[8] = False
    keep = items_to_keep(readable, records)
    # 2 is a label error (its copies 1 and 3 stay: 1 is first, 3 copies only a dropped item); 5 copies 4; 6 copies
    # only 5, which is dropped; 7 is in the other data; 8 is unreadable; 0 is ambiguous, not wrong: kept; 9 and 10
    # are a near pair with different labels: both kept for a person to judge (6 and 5 were the same content)
    assert np.flatnonzero(keep).tolist() == [0, 1, 3, 4, 6, 9, 10]


def test_texts_equal_after_folding_case_and_punctuation_have_equal_fingerprints():
    from headstart.modalities import get_modality

    prints = get_modality("text").content_fingerprints(
        ["Hello, World!", "hello   world", "item 1", "item 2", "!!!", "great 😀", "great 😡", "I didn't top-up",
         "i didnt top up"])
    assert prints[0] @ prints[1] == pytest.approx(1.0) and prints[7] @ prints[8] == pytest.approx(1.0)
    assert abs(prints[2] @ prints[3]) < 0.5 and abs(prints[5] @ prints[6]) < 0.5  # one character apart: unrelated
    assert not prints[4].any()  # no words: matches nothing
    assert np.allclose(np.linalg.norm(prints[[0, 2, 3, 5]], axis=1), 1.0)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A train.csv / test.csv pair where train holds an exact copy of one test row (with HTML in its text) and a
    copy of another in capitals (a near duplicate: the tokenizer is uncased), and a tiny BERT."""
    root = tmp_path_factory.mktemp("audit")
    data = root / "reviews"
    data.mkdir()
    table = pd.read_csv(write_text_table(root / "all.csv", n_per_class=40))
    table.loc[0, "text"] = SCRIPT
    test, train = table.iloc[:20].reset_index(drop=True), table.iloc[20:].reset_index(drop=True)
    train = pd.concat([train, test.iloc[[0]], pd.DataFrame([{"text": test.text[3].upper(), "label": test.label[3]}])],
                      ignore_index=True)
    train.to_csv(data / "train.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    other = root / "other.csv"
    pd.DataFrame([{"text": train.text[5], "label": "whatever"}, {"text": "an unrelated sentence", "label": "x"}]
                 ).to_csv(other, index=False)
    return {"root": root, "data": data, "test": test, "train": train, "other": other,
            "bert": make_tiny_bert(root / "tiny-bert")}


@pytest.fixture(scope="module")
def audited(planted):
    root = planted["root"]
    return headstart.audit(planted["data"], str(planted["bert"]), against=planted["other"], out=root / "audit.html",
                           write_clean=root / "clean.csv", max_length=32)


def test_an_exact_and_a_near_duplicate_across_the_splits_are_leaks(audited, planted):
    leaks = {(r["item"], r["other_item"], r["exact"]) for r in audited.of_kind("leak")}
    test = planted["test"]
    assert (SCRIPT, SCRIPT, True) in {(a, b, e) for a, b, e in leaks} or (SCRIPT, SCRIPT, True) in leaks
    assert any({a, b} == {test.text[3], test.text[3].upper()} and not e for a, b, e in leaks)
    assert len(leaks) == 2, leaks  # nothing else in these sentences embeds as alike
    assert {(r["split"], r["other_split"]) for r in audited.of_kind("leak")} <= {("test", "train"), ("test", "val"),
                                                                                ("train", "test"), ("val", "test")}
    assert audited.split_sizes["test"] == len(test)  # the data's own test.csv, as fit takes it
    against = audited.of_kind("against")
    assert [(r["item"], r["other_item"], r["exact"]) for r in against] == [(planted["train"].text[5],) * 2 + (True,)]


def test_a_sentence_copied_with_other_case_and_punctuation_is_found_by_its_characters(planted, tmp_path):
    """near_threshold 1: the embeddings alone call nothing a near duplicate; the folded text finds the
    copy whose case and punctuation changed, and nothing else."""
    source = planted["test"].text[5]
    recased = source.title().replace(" number", ", number") + "!"
    pd.DataFrame([{"text": recased, "label": planted["test"].label[5]}, {"text": "a film", "label": "positive"}]
                 ).to_csv(tmp_path / "other.csv", index=False)
    found = headstart.audit(planted["data"] / "test.csv", str(planted["bert"]), against=tmp_path / "other.csv",
                            near_threshold=1.0, max_length=32)
    assert [(r["item"], r["other_item"], r["exact"], r["same_content"]) for r in found.of_kind("against")] == \
        [(source, recased, False, True)]
    assert not found.of_kind("duplicate") and not found.of_kind("leak")
    assert "punctuation and spacing folded" in " ".join(found.notes)


def test_many_pairs_found_by_embeddings_alone_are_a_warning_not_a_silent_drop(audited, planted):
    assert not any("only their embeddings found" in note for note in audited.notes)  # the defaults: two copies
    loose = headstart.audit(planted["data"], str(planted["bert"]), near_threshold=0.05, max_length=32)
    alike = [r for r in loose.records if r["kind"] in ("duplicate", "leak", "conflicting") and not r["same_content"]]
    assert len(alike) > 10
    assert any("only their embeddings found" in note and "raise --near-threshold" in note for note in loose.notes)


def test_the_clean_table_drops_the_copies_and_fit_reads_it(audited, planted):
    root = planted["root"]
    clean = pd.read_csv(root / "clean.csv")
    assert list(clean.columns) == ["text", "label"]
    assert clean.text.str.lower().duplicated().sum() == 0
    assert planted["train"].text[5] not in set(clean.text)  # it is in the other data
    assert len(clean) == audited.items - 2 - 1 - len(audited.of_kind("label_error"))
    splits = prepare_splits(root / "clean.csv", None, None, 6, 10, None, 0)  # how fit reads and splits data
    assert len(splits.train) == len(clean) - 16 and splits.classes == ["negative", "positive"]
    assert (planted["data"] / "train.csv").read_text().count(SCRIPT) == 1  # the user's files are unchanged


def test_the_page_escapes_user_text_and_the_list_has_every_finding(audited, planted):
    page = (planted["root"] / "audit.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "Likely label errors" in page and "Leaks across the splits" in page
    listed = pd.read_csv(planted["root"] / "audit.csv")
    assert len(listed) == len(audited.records) and set(listed.kind) >= {"leak", "against"}


def test_suggest_writes_a_table_to_fill_in_that_fit_reads_with_the_labeled_rows(planted, audited, tiny_text_run):
    root = planted["root"]
    pool = write_text_table(root / "pool.csv", n_per_class=25, seed=5)
    result = headstart.suggest(pool, 4, backbone=str(planted["bert"]), labeled=root / "clean.csv",
                               out=root / "to_label.csv", max_length=32)
    to_label = pd.read_csv(root / "to_label.csv", keep_default_na=False)
    assert list(to_label.columns) == ["text", "label", "reason"] and len(to_label) == 4
    assert (to_label.label == "").all() and len(set(to_label.text)) == 4 and result.method == "typiclust"
    labeled_classes = set(pd.read_csv(root / "clean.csv").label)  # the labeled rows' classes balance the choice
    assert all(r.split("; likely ")[1].split(",")[0] in labeled_classes for r in to_label.reason)
    to_label.loc[:1, "label"] = "positive"  # two filled in, two not yet
    merged = pd.concat([pd.read_csv(root / "clean.csv"), to_label[["text", "label"]]], ignore_index=True)
    merged.to_csv(root / "merged.csv", index=False)
    data = load_data(root / "merged.csv").train  # as fit reads it: the rows without a label left out
    assert len(data) == len(pd.read_csv(root / "clean.csv")) + 2
    uncertain = headstart.suggest(pool, 3, model=tiny_text_run, out=root / "uncertain.csv")
    assert uncertain.method == "badge" and len(uncertain.items) == 3 and "BADGE" in uncertain.reasons[0]


def test_suggest_reads_the_labeled_tables_label_column_by_the_name_given(planted, tmp_path):
    pool = write_text_table(tmp_path / "pool.csv", n_per_class=10, seed=6)
    labeled = planted["train"].rename(columns={"label": "sentiment_tag"})
    labeled.to_csv(tmp_path / "labeled.csv", index=False)
    args = ["suggest", str(pool), "--budget", "2", "--backbone", str(planted["bert"]), "--max-length", "32",
            "--labeled", str(tmp_path / "labeled.csv"), "--out", str(tmp_path / "to_label.csv")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "name it with --label-column" in refused.output
    done = CliRunner().invoke(app, [*args, "--label-column", "sentiment_tag"])
    assert done.exit_code == 0, done.output
    assert len(pd.read_csv(tmp_path / "to_label.csv")) == 2


def test_the_commands_print_json_and_say_what_is_wrong_in_one_line(planted, tmp_path):
    runner = CliRunner()
    data, bert = str(planted["data"]), str(planted["bert"])
    unlabeled = tmp_path / "unlabeled.csv"  # --against data without labels: their items are compared all the same
    pd.DataFrame({"text": [planted["train"].text[9], "an unrelated sentence"]}).to_csv(unlabeled, index=False)
    done = runner.invoke(app, ["audit", data, "--backbone", bert, "--max-length", "32", "--json", "--out",
                               str(tmp_path / "a.html"), "--against", str(unlabeled)])
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["counts"]["leak"] == 2 and record["counts"]["against"] == 1 and (tmp_path / "a.csv").is_file()
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    bad = [
        (["audit", data, "--backbone", bert, "--near-threshold", "1.5"], "near_threshold"),
        (["audit", data, "--backbone", bert, "--write-clean", str(tmp_path / "audit.csv"), "--out",
          str(tmp_path / "audit.html")], "give the clean table another name"),
        (["audit", str(planted["data"] / "train.csv"), "--backbone", bert, "--write-clean",
          str(planted["data"] / "train.csv")], "never changes the data"),
        (["audit", str(planted["data"] / "train.csv"), "--backbone", bert, "--out", str(planted["data"] / "train.html")],
         "its list beside it) would write"),
        (["audit", str(tmp_path / "missing.csv"), "--backbone", bert], "does not exist"),
        (["audit", data, "--backbone", bert, "--epochs", "3"], "--strategy finetune"),
        (["audit", data, "--backbone", bert, "--strategy", "nope"], "nope"),
        (["suggest", data + "/train.csv", "--budget", "0", "--backbone", bert], "budget"),
        (["suggest", data + "/train.csv", "--budget", "2"], "--backbone"),
        (["suggest", data + "/train.csv", "--budget", "2", "--backbone", bert, "--model", str(tmp_path)], "not both"),
        (["suggest", data + "/train.csv", "--budget", "1000", "--backbone", bert, "--max-length", "32",
          "--out", str(tmp_path / "t.csv")], "ask for at most"),
        (["audit", data, "--backbone", bert, "--against", str(make_image_folder(tmp_path / "pictures", per_class=1))],
         "compare against data of the same kind"),
        (["audit", str(blank), "--backbone", bert], "is empty: a table needs a header row"),
    ]
    for args, words in bad:
        done = runner.invoke(app, args)
        assert done.exit_code == 2, (args, done.output)
        lines = [x for x in done.output.strip().splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and words in done.output, (args, done.output)
    assert (planted["data"] / "train.csv").is_file()


def _smooth_images(folder, count: int, seed: int = 0) -> list:
    """Distinct 32 x 32 photos-like images (smooth colour fields, upsampled from 4 x 4 noise) saved as PNG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8))
        paths.append(folder / f"{i}.png")
        small.resize((32, 32), Image.BICUBIC).save(paths[-1])
    return paths


def test_a_photo_resized_and_saved_as_jpeg_is_found_in_the_other_data_by_its_pixels(tmp_path):
    from PIL import Image

    from headstart.auditing.duplicates import CONTENT_THRESHOLD, image_fingerprints

    for name, seed in (("a", 0), ("b", 1)):
        _smooth_images(tmp_path / "train" / name, 8, seed)
    test = _smooth_images(tmp_path / "test" / "a", 3, seed=2)
    with Image.open(test[1]) as image:  # the leak: resized by 10% and re-encoded as JPEG quality 70
        image.resize((35, 35), Image.BICUBIC).save(tmp_path / "train" / "b" / "copy.jpg", quality=70)
    prints = image_fingerprints([tmp_path / "train" / "b" / "copy.jpg", *test])
    assert prints[0] @ prints[2] >= CONTENT_THRESHOLD > max(prints[0] @ prints[1], prints[0] @ prints[3])
    # near_threshold 1: the random CNN's embeddings alone call nothing a near duplicate; the pixels do
    found = headstart.audit(tmp_path / "train", "smallcnn", against=tmp_path / "test", near_threshold=1.0,
                            image_size=32)
    leaks = found.of_kind("against")
    assert [(r["item"].split("/")[-1], r["other_item"].split("/")[-1], r["same_content"]) for r in leaks] == \
        [("copy.jpg", "1.png", True)]
    # the record says how alike the thumbnails are (what found it), beside the embeddings' similarity
    assert leaks[0]["content_similarity"] == pytest.approx(float(prints[0] @ prints[2]), abs=1e-3)
    assert not found.of_kind("duplicate") and not found.of_kind("leak")
    assert "thumbnails" in " ".join(found.notes)


def _speech_like(rate: int, seed: int) -> np.ndarray:
    """A distinct half-second "word": three noise bursts through random resonances, between silences."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(rate * rng.uniform(0.05, 0.15)))]
    for _ in range(3):
        burst = rng.standard_normal(int(rate * rng.uniform(0.08, 0.2)))
        r, theta = 0.97, rng.uniform(0.1, 2.5)
        pieces += [lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], burst) * np.hanning(len(burst)),
                   np.zeros(int(rate * 0.03))]
    wave = np.concatenate(pieces)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def test_a_clip_copied_with_silence_in_front_or_resampled_is_found_and_distinct_clips_are_not(tmp_path):
    import soundfile
    from scipy.signal import resample_poly

    from headstart.auditing.duplicates import CONTENT_THRESHOLD
    from headstart.modalities import get_modality

    rate = 8000
    for name, seed in (("a", 0), ("b", 100)):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(6):
            soundfile.write(tmp_path / "train" / name / f"{i}.wav", _speech_like(rate, seed + i), rate)
    (tmp_path / "test" / "a").mkdir(parents=True)
    test = [tmp_path / "test" / "a" / f"{i}.wav" for i in range(3)]
    for i, path in enumerate(test):
        soundfile.write(path, _speech_like(rate, 200 + i), rate)
    original = _speech_like(rate, 201)
    shifted = tmp_path / "train" / "b" / "shifted.wav"  # the leaks: 30 ms of silence in front, and 16 kHz at 0.8 gain
    soundfile.write(shifted, np.concatenate([np.zeros(240, np.float32), original]), rate)
    soundfile.write(tmp_path / "train" / "a" / "resampled.flac", resample_poly(original, 2, 1) * 0.8, 2 * rate)
    audio = get_modality("audio")
    prints = audio.content_fingerprints([shifted, *test, tmp_path / "train" / "a" / "0.wav"])
    assert prints[0] @ prints[2] >= CONTENT_THRESHOLD
    assert max(prints[0] @ prints[1], prints[0] @ prints[3], prints[1] @ prints[4]) < 0.9

    found = headstart.audit(tmp_path / "train", "smallcnn", against=tmp_path / "test")
    assert found.near_threshold == audio.near_duplicate_threshold == 0.99  # audio's own default
    leaks = sorted((r["item"].split("/")[-1], r["other_item"].split("/")[-1]) for r in found.of_kind("against"))
    assert leaks == [("resampled.flac", "1.wav"), ("shifted.wav", "1.wav")]
    # the two copies, labeled differently, are one conflicting pair; none of the twelve distinct clips is flagged
    pairs = [{r["item"].split("/")[-1], r["other_item"].split("/")[-1]} for r in found.records
             if r["kind"] in ("duplicate", "leak", "conflicting")]
    assert pairs == [{"resampled.flac", "shifted.wav"}]
    assert "silent ends trimmed" in " ".join(found.notes)


def test_data_too_small_for_fits_splits_are_audited_without_leaks_across_splits(tmp_path):
    """A first round of labels (one or two per class): fit cannot cut its splits, audit still runs and says why
    it judged no leaks across splits."""
    rows = [{"text": f"sentence number {i} about topic {i % 5}", "label": f"class{i % 5}"} for i in range(7)]
    pd.DataFrame(rows).to_csv(tmp_path / "few.csv", index=False)
    bert = make_tiny_bert(tmp_path / "bert")
    found = headstart.audit(tmp_path / "few.csv", str(bert), max_length=16)
    assert set(found.audited.splits) == {"train"} and not found.of_kind("leak")
    assert "no leaks across splits judged, since `fit` could not split these data" in " ".join(found.notes)


def test_an_option_the_command_does_not_have_is_named_in_one_error(tmp_path):
    from headstart.errors import SettingsError

    with pytest.raises(SettingsError, match=r"^audit has no option bogus$"):
        headstart.audit(tmp_path / "data.csv", "minilm", bogus=1)
    # a strategy's settings are checked before the (missing) data are read; without a strategy they have no use
    with pytest.raises(SettingsError, match=r"^audit: epochs set how a strategy .*\(--strategy finetune"):
        headstart.audit(tmp_path / "data.csv", "minilm", epochs=3)
    with pytest.raises(SettingsError, match=r"^strategy 'finetune' has no setting bogus"):
        headstart.audit(tmp_path / "data.csv", "minilm", strategy="finetune", epochs=3, bogus=1)
    with pytest.raises(SettingsError, match=r"^suggest has no option bogus$"):
        headstart.suggest(tmp_path / "pool.csv", 3, backbone="minilm", bogus=1, seed=2)
