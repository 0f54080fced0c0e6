"""Issue 24 acceptance, text part: how well `headstart audit` finds wrong labels and leaked test items.

- Label errors: a seeded random subset of SST-2 train (`--items`, default 1,500) with 10% of its labels flipped
  (seeded); `audit` with minilm flags items; precision and recall of the flagged set against the flipped set. Then
  the accuracy a logistic-regression probe on the same cached embeddings reaches on SST-2 dev items (`--dev`) when
  fitted on the original labels, the noisy labels, and the `--write-clean` table: the share of the accuracy lost to
  the noise that the clean table recovers.
- Leaks: 100 dev items copied into the training table with changed case and punctuation ("one long string of
  cliches ." -> "One Long String Of Cliches!"), audited `against` the dev items: the share of copies found, and the
  share of the other training items wrongly flagged as in dev. Also the similarity of each copy to its original and
  of each other item to its nearest dev item, the measurement behind the near-duplicate threshold (0.9), with
  found/false-flag rates at other thresholds.
- The judge's own ranking: the best precision of any cut of its issues, least likely label first, whose recall is
  at least 0.6 ("best cut of its issues"): how much of a shortfall is the ranking and how much the count.
- Reference: cleanlab's own recommended pipeline on the same embeddings (`cleanlab_reference`), to tell the limit of
  frozen features from a weakness of audit's probe.

The minilm embeddings are cached (HEADSTART_CACHE, default benchmarks/out/cache): a rerun costs seconds.

  PYTHONPATH=src python benchmarks/audit_quality.py                # ~2,000 minilm embeddings, a few CPU minutes
  PYTHONPATH=src python benchmarks/audit_quality.py --backbone mpnet   # the same with mpnet (audit_quality_mpnet.json)
  PYTHONPATH=src python benchmarks/audit_quality.py --items 7000 --strategy finetune --epochs 3
      # all of SST-2 train, labels judged by minilm fine-tuned on the other folds (about 20 minutes on 2 cores)
  PYTHONPATH=src python benchmarks/audit_quality.py --smoke
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, shared, start_smoke, table

THRESHOLDS = (0.8, 0.85, 0.9, 0.95)


def recase(text: str, rng: np.random.Generator) -> str:
    """The same text with other case and punctuation: capitals, punctuation joined to the word before it, the
    final stop changed or dropped."""
    style = rng.integers(3)
    words = text.split()
    words = ([w.upper() for w in words] if style == 0 else [w.capitalize() for w in words] if style == 1
             else [words[0].capitalize(), *words[1:]])
    out = re.sub(r" ([,.;:!?])", r"\1", " ".join(words)).rstrip(".!? ")
    return out + ["!", "", "..."][int(rng.integers(3))]


def build_tables(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The noisy training table (with the recased dev copies appended), the dev table, and the ground truth."""
    import pandas as pd

    if args.smoke:
        train_all, dev_all = args.smoke_tables
    else:
        train_all = pd.read_csv(shared("text/sst2/train.csv"), keep_default_na=False)
        dev_all = pd.read_csv(shared("text/sst2/dev.csv"), keep_default_na=False)
    rng = np.random.default_rng(args.seed)
    train = train_all.iloc[rng.choice(len(train_all), min(args.items, len(train_all)), replace=False)]
    train = train.drop_duplicates("text").reset_index(drop=True)
    dev = dev_all.iloc[rng.choice(len(dev_all), min(args.dev, len(dev_all)), replace=False)].reset_index(drop=True)
    dev = dev[~dev.text.isin(set(train.text))].reset_index(drop=True)
    classes = sorted(train.label.unique())
    flipped = rng.choice(len(train), round(args.noise * len(train)), replace=False)
    noisy = train.copy()
    noisy.loc[flipped, "label"] = [rng.choice([c for c in classes if c != label])
                                   for label in train.label[flipped]]
    copied = rng.choice(len(dev), min(args.leaks, len(dev)), replace=False)
    copies = pd.DataFrame({"text": [recase(t, rng) for t in dev.text[copied]], "label": dev.label[copied].values})
    table_path = folder / "train-noisy.csv"
    pd.concat([noisy, copies], ignore_index=True).to_csv(table_path, index=False)
    dev_path = folder / "dev.csv"
    dev.to_csv(dev_path, index=False)
    return {"train": train, "noisy": noisy, "dev": dev, "flipped": set(flipped.tolist()), "copied": copied,
            "copies": copies, "table": table_path, "dev_table": dev_path}


def probe_accuracy(train_x: np.ndarray, train_y: list[str], dev_x: np.ndarray, dev_y: list[str]) -> float:
    """Dev accuracy of scikit-learn's logistic regression on standardised embeddings (the same for every label
    set, so only the labels differ)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(train_x, train_y)
    return float((probe.predict(dev_x) == np.asarray(dev_y)).mean())


def cleanlab_reference(x: np.ndarray, noisy: list[str], true: list[str], flipped: set[int], seed: int
                       ) -> dict[str, Any]:
    """cleanlab's own recommended pipeline on the same embeddings, as a reference for audit's label errors:
    out-of-fold probabilities of scikit-learn's LogisticRegression with its defaults (5 stratified folds), then
    `cleanlab.filter.find_label_issues` with its defaults; and how often that probe's out-of-fold prediction is
    the true label (the bound on what confident learning can tell apart with these features)."""
    import cleanlab.filter
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    classes = sorted(set(noisy))
    y = np.searchsorted(classes, noisy)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")
    issues = set(np.flatnonzero(cleanlab.filter.find_label_issues(y, probs)).tolist())
    hits = len(issues & flipped)
    return {"flagged": len(issues), "precision": round(hits / max(len(issues), 1), 3),
            "recall": round(hits / max(len(flipped), 1), 3),
            "out-of-fold accuracy on true labels": round(float((probs.argmax(1) == np.searchsorted(classes, true))
                                                               .mean()), 3)}


def ranking_ceiling(x: np.ndarray, noisy: list[str], flipped: set[int], seed: int) -> dict[str, Any]:
    """What any cut of audit's ranking could reach: the items ranked by the out-of-fold probability of their given
    label (audit's probe, least likely first), and the precision at the number of flipped labels and the best
    precision at any cut whose recall is at least 0.6 (the issue's bar for both)."""
    from headstart.auditing.label_errors import out_of_fold_probabilities

    classes = sorted(set(noisy))
    y = np.searchsorted(classes, noisy)
    probs, _ = out_of_fold_probabilities(x, y, len(classes), seed)
    precision, recall = ranking_curve(probs, y, flipped)
    return {"precision at k = flipped": round(float(precision[max(len(flipped), 1) - 1]), 3),
            "best precision at recall >= 0.6": best_cut(precision, recall)}


def ranking_curve(probabilities: np.ndarray, given: np.ndarray, flipped: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of the flipped items at every cut of the ranking by the given label's probability
    (least likely first)."""
    order = np.argsort(probabilities[np.arange(len(given)), given], kind="stable")
    hits = np.cumsum([int(i) in flipped for i in order])
    return hits / np.arange(1, len(order) + 1), hits / max(len(flipped), 1)


def best_cut(precision: np.ndarray, recall: np.ndarray, bar: float = 0.6) -> float:
    """The best precision among the cuts whose recall is at least `bar` (0 when none is)."""
    reached = recall >= bar
    return round(float(precision[reached].max()), 3) if reached.any() else 0.0


def similarity_profile(backbone: str, data: dict[str, Any], max_length: int | None) -> dict[str, Any]:
    """Centred cosine similarity of each copy to its original, and of each original training item to its most
    similar dev item (from the cache the audit filled), with the rates at several thresholds."""
    from headstart.auditing.similarity import scan, unit_rows
    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import backbone_cache
    from headstart.embeddings import embed_items

    net = resolve_backbone(backbone, max_length=max_length, modality="text")
    store = backbone_cache(net, "auto")
    items = list(data["noisy"].text) + list(data["copies"].text)
    x, _ = embed_items(net, items, store, "auto")
    dev_x, _ = embed_items(net, list(data["dev"].text), store, "auto")
    center = x.mean(axis=0)
    unit, dev_unit = unit_rows(x, center), unit_rows(dev_x, center)
    n = len(data["noisy"])
    copy_sims = np.einsum("ij,ij->i", unit[n:], dev_unit[data["copied"]])
    nearest_dev = scan(unit[:n], dev_unit, None, k=1).neighbour_similarity[:, 0]
    rows = [{"threshold": t, "copies found %": round(100 * float((copy_sims >= t).mean()), 1),
             "others flagged %": round(100 * float((nearest_dev >= t).mean()), 2)} for t in THRESHOLDS]
    return {"copy_similarity": {"min": float(copy_sims.min()), "p5": float(np.percentile(copy_sims, 5)),
                                "median": float(np.median(copy_sims))},
            "others_nearest_dev": {"p99": float(np.percentile(nearest_dev, 99)), "max": float(nearest_dev.max())},
            "thresholds": rows, "embeddings": (x, dev_x)}


def score_audit(result: Any, data: dict[str, Any], x: np.ndarray, dev_x: np.ndarray, clean_rows: int,
                seconds: float, **after_copies: Any) -> dict[str, Any]:
    """One result row of an audit of `data` (build_tables' noisy table, its flipped rows and the copied dev items
    after them): precision and recall of the flagged label errors, the copies found and the others flagged, and
    the dev accuracy of a probe on the original, noisy and kept labels (x: the table's embeddings, dev_x the dev
    items'). `after_copies`: columns the caller adds after "copies flagged as errors" (shared by audit_images)."""
    n = len(data["noisy"])
    flagged = {r["index"] for r in result.of_kind("label_error") if r["index"] < n}
    flagged_copies = sum(1 for r in result.of_kind("label_error") if r["index"] >= n)
    hits = len(flagged & data["flipped"])
    issues = flagged | {r["index"] for r in result.of_kind("ambiguous_label") if r["index"] < n}
    issue_hits = len(issues & data["flipped"])
    ranked = sorted((r for kind in ("label_error", "ambiguous_label") for r in result.of_kind(kind) if r["index"] < n),
                    key=lambda r: r["score"])  # the judge's own ranking of its issues, least likely label first
    ranked_hits = np.cumsum([r["index"] in data["flipped"] for r in ranked]) if ranked else np.zeros(0)
    found = {r["index"] - n for r in result.of_kind("against") if r["index"] >= n}
    others = {r["index"] for r in result.of_kind("against") if r["index"] < n}
    kept = np.flatnonzero(result.keep[:n])
    dev_y = list(data["dev"].label)
    accuracy = {"original labels": probe_accuracy(x[:n], list(data["train"].label), dev_x, dev_y),
                "noisy labels": probe_accuracy(x[:n], list(data["noisy"].label), dev_x, dev_y),
                "clean table": (probe_accuracy(x[:n][kept], list(data["noisy"].label[kept]), dev_x, dev_y)
                                if len(set(data["noisy"].label[kept])) > 1 else float("nan"))}
    lost = accuracy["original labels"] - accuracy["noisy labels"]
    recovered = ((accuracy["clean table"] - accuracy["noisy labels"]) / lost
                 if lost > 0 and accuracy["clean table"] == accuracy["clean table"] else None)
    return {"items": n, "flipped": len(data["flipped"]), "flagged": len(flagged),
            "precision": round(hits / max(len(flagged), 1), 3), "recall": round(hits / max(len(data["flipped"]), 1), 3),
            "ambiguous": len(issues) - len(flagged),
            "issues precision": round(issue_hits / max(len(issues), 1), 3),
            "issues recall": round(issue_hits / max(len(data["flipped"]), 1), 3),
            "best cut of its issues": best_cut(ranked_hits / np.arange(1, len(ranked) + 1),
                                               ranked_hits / max(len(data["flipped"]), 1)),
            "copies flagged as errors": flagged_copies, **after_copies,
            "leaks found %": round(100 * len(found) / len(data["copied"]), 1),
            "others flagged %": round(100 * len(others) / n, 2),
            "acc original": round(accuracy["original labels"], 4), "acc noisy": round(accuracy["noisy labels"], 4),
            "acc clean": round(accuracy["clean table"], 4),
            "recovered": round(recovered, 3) if recovered is not None else "n/a",
            "clean rows": clean_rows, "audit s": round(seconds, 1)}


def score_and_print(result: Any, data: dict[str, Any], profile: dict[str, Any], clean_rows: int, seconds: float,
                    seed: int, held_out: str, **after_copies: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The audit's result row and cleanlab's reference on the same embeddings (taken out of `profile`), printed
    with the similarity profile: what this script and audit_images.py report alike. `held_out` names the second
    data set in the printout (dev sentences, test images)."""
    x, dev_x = profile.pop("embeddings")
    row = score_audit(result, data, x, dev_x, clean_rows, seconds, **after_copies)
    n = len(data["noisy"])
    reference = cleanlab_reference(x[:n], list(data["noisy"].label), list(data["train"].label), data["flipped"], seed)
    reference["audit's ranking"] = ranking_ceiling(x[:n], list(data["noisy"].label), data["flipped"], seed)
    print(table([row], list(row)))
    print("cleanlab's recommended pipeline (LogisticRegression defaults, find_label_issues defaults) on the same "
          "embeddings:")
    print(table([reference], [k for k in reference if k != "audit's ranking"]))
    print("audit's ranking, any cut:", reference["audit's ranking"])
    print(table(profile["thresholds"], ["threshold", "copies found %", "others flagged %"]))
    print(f"copy similarity {profile['copy_similarity']}; other items' nearest {held_out} item "
          f"{profile['others_nearest_dev']}")
    return row, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--items", type=int, default=1500, help="SST-2 training items audited")
    parser.add_argument("--dev", type=int, default=400, help="SST-2 dev items: the --against set and the accuracy test")
    parser.add_argument("--leaks", type=int, default=100, help="dev items copied into the training table")
    parser.add_argument("--noise", type=float, default=0.1, help="share of training labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--strategy", default=None, help="judge the labels by this fit strategy fitted on the other "
                                                         "folds (audit's strategy=); default: audit's probe")
    parser.add_argument("--epochs", type=int, default=None, help="the --strategy's epochs (default: its own)")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:
        folder = start_smoke()
        table_path, bert = _common.smoke_text(folder / "text", per_class=40)
        import pandas as pd

        frame = pd.read_csv(table_path)
        args.smoke_tables = frame.iloc[:60], frame.iloc[60:]
        args.backbone, args.items, args.dev, args.leaks, args.max_length = str(bert), 60, 20, 5, 32
    else:
        folder = _common.OUT / "audit_quality"
        folder.mkdir(parents=True, exist_ok=True)
        quiet_fits(_common.OUT / "cache")
    import pandas as pd

    import headstart

    data = build_tables(args, folder)
    started = time.perf_counter()
    judge = {"strategy": args.strategy} if args.strategy else {}
    judge.update({"epochs": args.epochs} if args.epochs else {})
    result = headstart.audit(data["table"], args.backbone, against=data["dev_table"], seed=args.seed,
                             max_length=args.max_length, out=folder / "audit.html",
                             write_clean=folder / "clean.csv", **judge)
    seconds = time.perf_counter() - started
    profile = similarity_profile(args.backbone, data, args.max_length)
    clean = pd.read_csv(folder / "clean.csv", keep_default_na=False)
    row, reference = score_and_print(result, data, profile, len(clean), seconds, args.seed, held_out="dev")
    name = "audit_quality" if args.backbone == "minilm" or args.smoke else f"audit_quality_{args.backbone}"
    name += "".join(f"_{part}" for part in (args.strategy, args.epochs and f"{args.epochs}epochs",
                                            args.items != 1500 and f"{args.items}items") if part)
    _common.write_results(name, {"settings": {k: v for k, v in vars(args).items() if k != "smoke_tables"},
                                 "result": row, "cleanlab_reference": reference, "similarity": profile,
                                 "audit_seconds": result.seconds, "overlapping_classes": result.overlapping_classes})


if __name__ == "__main__":
    main()
