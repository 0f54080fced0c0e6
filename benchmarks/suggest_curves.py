"""Issue 24 acceptance, `suggest`: which items to label next, against random choice, from zero labels.

Two sets, each embedded once through headstart's cache:
- CIFAR-10 with efficientnet_lite0: the pool is the 5,000 images benchmarks/audit_images.py audits (a seeded
  class-balanced subset of train, `cifar_sets`), the test set its 1,000 other images (the shared copy has no test
  split);
- Banking77 (77 intents) with minilm: a seeded 2,000 rows of the shared train.csv held out as the test set, the
  other 8,003 rows the pool.

Rounds of one label per class on average (10 items per round for CIFAR-10, 77 for Banking77) up to 10 per class;
after each round a model is fitted on the labeled items and scored on the test set: by default (`--evaluator
probe`) a logistic-regression probe (scikit-learn, standardised embeddings, C 0.1: the evaluator of
audit_quality.py), with `--evaluator prototypes` the nearest-class-mean head of `fit --strategy prototypes`.
Methods, each over `--seeds` seeds (random over `--random-seeds`, 10 by default: its mean curve is the yardstick
every saving is read off, and with 3 seeds its noise moved the 1.5x point by up to a round; its draws cost no
clustering, so 10 take seconds):
- random: the next items drawn uniformly from the unlabeled pool;
- typiclust: `suggest --backbone` every round (TypiClust with the items labeled so far as `--labeled`, whose
  labels make its choice class-balanced), the library's own function on the cached embeddings;
- typiclust+badge: TypiClust for the first `--badge-from` rounds (the same picks as typiclust: they are taken
  from its run), then `suggest --model` (BADGE) with the probe of the round before standing in for the trained
  model (its last layer reads the standardised embeddings).
The table gives mean accuracy per labels-per-class, and for each suggest budget the labels random needs to reach the
same accuracy (interpolated on random's mean curve) divided by suggest's labels: the issue asks for at least 1.5.
Random runs `--random-rounds` (1.5x `--rounds`, rounded up, by default), so that the saving is measured, not only
bounded, up to the last suggest round (random is cheap: no clustering).

  PYTHONPATH=src python benchmarks/suggest_curves.py --sets cifar10     # 10 rounds, 3 seeds
  PYTHONPATH=src python benchmarks/suggest_curves.py --sets banking77   # k-means into 77 x round clusters of the
                                                                        # 8,003 items each round: 3-6 s a round
  PYTHONPATH=src python benchmarks/suggest_curves.py --smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, shared, start_smoke, table
from audit_images import cifar_sets

METHODS = ("random", "typiclust", "typiclust+badge")
MAX_PER_CLASS = 4900  # CIFAR-10's shared train folder: 5,000 per class, 100 of them the test set
BADGE_FROM = 7  # docs/audit.md's advice: `suggest --backbone` to about 7 labels per class, then `--model`
COLUMNS = ["set", "labels per class", "labels", *METHODS, *(f"{m} saving" for m in METHODS[1:])]


def probe_evaluator(x: np.ndarray, y: np.ndarray) -> Any:
    """A standardised logistic regression (C 0.1), the kind of model `fit --strategy probe` trains, in
    milliseconds. On CIFAR-10 it scored within a few points of real probe fits at 2-10 labels per class, and
    below them at one (RESULTS.md, "Issue 24, tenth round")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(x, y)


class PrototypesEvaluator:
    """What `fit --strategy prototypes` trains (the library's own head, set on the labeled items' embeddings),
    with the part of a scikit-learn classifier's interface that the rounds use."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        from headstart.heads import PrototypeHead
        from headstart.strategies import Prototypes
        from headstart.tasks import task_of

        self.classes_, codes = np.unique(y, return_inverse=True)
        self.head = PrototypeHead.from_class_means(task_of({"task": "classification"}), x, codes,
                                                   [str(c) for c in self.classes_], Prototypes().logit_scale)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.head.logits(x).argmax(1)]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.head.probabilities(x)

    def last_layer_inputs(self, x: np.ndarray) -> np.ndarray:
        return self.head.last_layer_inputs(x)


EVALUATORS = {"probe": probe_evaluator, "prototypes": PrototypesEvaluator}


def last_layer_inputs(model: Any, x: np.ndarray) -> np.ndarray:
    """What the stand-in model's last layer reads (BADGE's gradient embeddings are outer products with it)."""
    if isinstance(model, PrototypesEvaluator):
        return model.last_layer_inputs(x)
    return model[0].transform(x)


def embedded(backbone: str, items: list, modality: str, image_size: int | None = None,
             max_length: int | None = None) -> np.ndarray:
    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import backbone_cache
    from headstart.embeddings import embed_items

    net = resolve_backbone(backbone, image_size=image_size, max_length=max_length, modality=modality)
    x, failures = embed_items(net, items, backbone_cache(net, "auto"), "auto")
    if failures:
        raise SystemExit(f"{len(failures)} items could not be embedded: {failures[:3]}")
    return x


def choose(method: str, unit: np.ndarray, pool_x: np.ndarray, pool_y: np.ndarray, labeled: np.ndarray, probe: Any,
           budget: int, rng: np.random.Generator, seed: int) -> list[int]:
    """The next `budget` pool rows by `method` (the rows in `labeled` are never chosen again; TypiClust knows
    their labels, as `suggest --labeled` does)."""
    from headstart.auditing.suggestions import badge, typiclust

    candidate = np.ones(len(unit), dtype=bool)
    candidate[labeled] = False
    if method == "random":
        return rng.choice(np.flatnonzero(candidate), budget, replace=False).tolist()
    if method == "typiclust" or probe is None:
        return typiclust(unit, candidate, budget, seed, pool_y[~candidate])[0]
    probabilities = probe.predict_proba(pool_x)
    classes = [str(c) for c in probe.classes_]
    return badge(last_layer_inputs(probe, pool_x), probabilities, candidate, budget, classes, seed)[0]


def curve(method: str, pool_x: np.ndarray, pool_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
          rounds: int, per_round: int, seed: int, start: list[int] | None = None, evaluator: Any = probe_evaluator
          ) -> tuple[list[float], list[list[int]]]:
    """Test accuracy of `evaluator` (one of EVALUATORS) after each round of `per_round` labels chosen by `method`,
    from the labeled rows `start` (none: from zero labels), and the rows labeled after each round."""
    from headstart.auditing.similarity import unit_rows

    unit = unit_rows(pool_x, pool_x.mean(axis=0))
    rng = np.random.default_rng(seed)
    labeled: list[int] = list(start or [])
    probe = evaluator(pool_x[labeled], pool_y[labeled]) if len(set(pool_y[labeled])) > 1 else None
    accuracies, history = [], []
    for _ in range(rounds):
        chosen = choose(method, unit, pool_x, pool_y, np.asarray(labeled, dtype=np.int64), probe, per_round, rng,
                        seed)
        assert not set(chosen) & set(labeled) and len(chosen) == per_round, (method, len(labeled), len(chosen))
        labeled += [int(i) for i in chosen]
        if len(set(pool_y[labeled])) < 2:
            probe, accuracy = None, float(np.mean(test_y == pool_y[labeled][0]))
        else:
            probe = evaluator(pool_x[labeled], pool_y[labeled])
            accuracy = float((probe.predict(test_x) == test_y).mean())
        accuracies.append(accuracy)
        history.append(list(labeled))
    return accuracies, history


def labels_random_needs(random_mean: np.ndarray, labels: np.ndarray, accuracy: float) -> float | None:
    """The fewest labels at which random's mean curve (made monotone) reaches `accuracy`, linearly interpolated
    between rounds; None when it never does within the rounds run."""
    monotone = np.maximum.accumulate(random_mean)
    reached = np.flatnonzero(monotone >= accuracy)
    if len(reached) == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(labels[0] * accuracy / monotone[0])  # below random's first point: scaled, a lower bound
    low, high = monotone[i - 1], monotone[i]
    return float(labels[i - 1] + (labels[i] - labels[i - 1]) * (accuracy - low) / (high - low))


def pool_of(data: dict[str, Any], seed: int, seeds: int) -> tuple[np.ndarray, ...]:
    """The pool and test arrays a seed's run uses: the one pool, or with `--resample-pools` seed s's own random
    subset of it (random choice's seed r uses suggest's pool r mod `seeds`, so its curve is read on the same pools)."""
    x, y = data["pool_x"], data["pool_y"]
    if "pools" in data:
        rows = data["pools"][seed % seeds]
        x, y = x[rows], y[rows]
    return x, y, data["test_x"], data["test_y"]


def run_set(name: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    classes = len(set(data["pool_y"]) | set(data["test_y"]))
    per_round = classes  # one label per class on average
    labels = np.arange(1, args.rounds + 1) * per_round
    random_rounds = max(args.rounds, args.random_rounds or int(np.ceil(1.5 * args.rounds)))
    random_labels = np.arange(1, random_rounds + 1) * per_round
    results: dict[str, list[list[float]]] = {}
    histories = {}
    for method in METHODS:
        started = time.perf_counter()
        results[method] = []
        for seed in range(args.random_seeds if method == "random" else args.seeds):
            arrays = pool_of(data, seed, args.seeds)
            if method == "typiclust+badge":  # TypiClust's first rounds, then BADGE from where they left off
                switch = min(args.badge_from, args.rounds)
                prefix = results["typiclust"][seed][:switch]
                accuracies, _ = curve(method, *arrays, args.rounds - switch, per_round, seed,
                                      start=histories[seed][switch - 1] if switch else None,
                                      evaluator=EVALUATORS[args.evaluator])
                results[method].append(prefix + accuracies)
                continue
            accuracies, history = curve(method, *arrays, random_rounds if method == "random" else args.rounds,
                                        per_round, seed, evaluator=EVALUATORS[args.evaluator])
            results[method].append(accuracies)
            if method == "typiclust":
                histories[seed] = history
        print(f"{name} {method}: {time.perf_counter() - started:.0f} s", flush=True)
    means = {m: np.mean(results[m], axis=0) for m in METHODS}
    stds = {m: np.std(results[m], axis=0) for m in METHODS}
    rows = []
    for r, n in enumerate(labels):
        row = {"set": name, "labels per class": r + 1, "labels": int(n)}
        for m in METHODS:
            row[m] = round(float(means[m][r]), 4)
        for m in METHODS[1:]:
            needed = labels_random_needs(means["random"], random_labels, float(means[m][r]))
            row[f"{m} saving"] = round(needed / n, 2) if needed is not None else f">{random_labels[-1] / n:.2f}"
        rows.append(row)
    pool = len(data["pools"][0]) if "pools" in data else len(data["pool_y"])
    return {"name": name, "backbone": data["backbone"], "evaluator": args.evaluator, "pool": pool, "test": len(data["test_y"]),
            "classes": classes, "labels": labels.tolist(),
            "random_labels": random_labels.tolist(), "accuracy": results,
            "mean": {m: means[m].tolist() for m in METHODS}, "std": {m: stds[m].tolist() for m in METHODS},
            "rows": rows}


def plot(sets: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 3.8), squeeze=False)
    styles = {"random": ("grey", "o"), "typiclust": ("tab:blue", "s"), "typiclust+badge": ("tab:orange", "^")}
    for ax, s in zip(axes[0], sets):
        for m in METHODS:
            per_class = np.asarray(s["random_labels" if m == "random" else "labels"]) / s["classes"]
            mean, std = np.asarray(s["mean"][m]), np.asarray(s["std"][m])
            color, marker = styles[m]
            ax.plot(per_class, mean, color=color, marker=marker, markersize=4, label=m)
            ax.fill_between(per_class, mean - std, mean + std, color=color, alpha=0.15)
        ax.set_title(f"{s['name']} ({s['backbone']}, pool {s['pool']:,}, test {s['test']:,})", fontsize=9)
        ax.set_xlabel("labels per class (on average)")
        ax.set_ylabel(f"test accuracy ({s.get('evaluator', 'probe')})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"suggest vs random, mean of {len(sets[0]['accuracy']['typiclust'])} seeds (random: "
                 f"{len(sets[0]['accuracy']['random'])}; band: +-1 sd)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def load_sets(args: argparse.Namespace, folder: Path | None) -> list[dict[str, Any]]:
    import pandas as pd

    if args.smoke:
        images = _common.smoke_images(folder / "images", per_class=14)
        pool, test = cifar_sets(images, 10, 4, 0)
        image_backbone, image_size = "smallcnn", 32
        table_path, bert = _common.smoke_text(folder / "text", per_class=20)
        frame = pd.read_csv(table_path).rename(columns={"label": "category"})
        text_backbone, max_length, test_rows = str(bert), 32, 10
    else:
        per_class = MAX_PER_CLASS if args.resample_pools else args.pool_per_class
        pool, test = cifar_sets(shared("images/cifar10/train"), per_class, 100, 0)
        image_backbone, image_size = "efficientnet_lite0", None
        frame = pd.read_csv(shared("text/banking77/train.csv"), keep_default_na=False)
        text_backbone, max_length, test_rows = "minilm", None, 2000
    sets = []
    if "cifar10" in args.sets:
        sets.append({"name": "CIFAR-10", "backbone": image_backbone,
                     "pool_x": embedded(image_backbone, [p for p, _ in pool], "image", image_size=image_size),
                     "pool_y": np.array([c for _, c in pool]),
                     "test_x": embedded(image_backbone, [p for p, _ in test], "image", image_size=image_size),
                     "test_y": np.array([c for _, c in test])})
        if args.resample_pools:  # each seed its own random pool of the 49,000 (test: their 1,000 others)
            size = args.pool_per_class * 10
            sets[-1]["pools"] = [np.random.default_rng(100 + s).choice(len(pool), size, replace=False)
                                 for s in range(args.seeds)]
    if "banking77" in args.sets:
        held_out = np.zeros(len(frame), dtype=bool)
        held_out[np.random.default_rng(0).choice(len(frame), test_rows, replace=False)] = True
        x = embedded(text_backbone, list(frame.text), "text", max_length=max_length)
        y = frame.category.to_numpy().astype(str)
        sets.append({"name": "Banking77", "backbone": "minilm" if not args.smoke else "tiny-bert",
                     "pool_x": x[~held_out], "pool_y": y[~held_out], "test_x": x[held_out], "test_y": y[held_out]})
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["cifar10", "banking77"], choices=["cifar10", "banking77"])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of one label per class on average")
    parser.add_argument("--random-rounds", type=int, default=None,
                        help="rounds of random choice (default 1.5x --rounds, rounded up): its curve must reach "
                             "1.5x suggest's labels to measure the saving")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--badge-from", type=int, default=BADGE_FROM,
                        help="typiclust+badge: the rounds of TypiClust before BADGE takes over")
    parser.add_argument("--random-seeds", type=int, default=10, help="seeds of random choice, the yardstick")
    parser.add_argument("--evaluator", choices=tuple(EVALUATORS), default="probe",
                        help="what each round's labels train and are scored with: probe (a standardised logistic "
                             "regression, as `fit --strategy probe`) or prototypes (`fit --strategy prototypes`, "
                             "nearest class mean, what `auto` guesses with up to 2 labels per class or 100 in all)")
    parser.add_argument("--pool-per-class", type=int, default=500,
                        help="CIFAR-10: unlabeled images per class in the pool (500: the 5,000 audit_images.py "
                             "audits; up to 4,900, the test set takes 100 per class of the 5,000)")
    parser.add_argument("--resample-pools", action="store_true",
                        help="CIFAR-10: each seed draws its own pool (--pool-per-class x 10 images, not class "
                             "balanced) from the 49,000 images outside the test set: the saving over many pools, "
                             "not one")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.resample_pools and not 0 < args.pool_per_class < MAX_PER_CLASS:
        parser.error(f"--resample-pools draws pools smaller than the {MAX_PER_CLASS * 10:,} images: "
                     f"--pool-per-class must be under {MAX_PER_CLASS}")
    if args.smoke:
        folder = start_smoke()
        args.rounds, args.seeds, args.random_seeds, args.badge_from = 3, 2, 2, 1
    else:
        folder = None
        quiet_fits(_common.OUT / "cache")
    name = "suggest_curves" if len(args.sets) == 2 else f"suggest_curves_{args.sets[0]}"
    if args.seeds != 3:  # the 3 seeds keep the plain name; a run with more is kept beside it
        name += f"_{args.seeds}seeds"
    if (args.pool_per_class != 500 or args.resample_pools) and "cifar10" in args.sets:
        name += f"_pool{args.pool_per_class * 10}" + ("_resampled" if args.resample_pools else "")
    if args.badge_from != BADGE_FROM and not args.smoke:
        name += f"_badge{args.badge_from}"
    if args.evaluator != "probe":
        name += f"_{args.evaluator}"
    figure = (folder if args.smoke else _common.ROOT / "figures") / f"{name}.png"
    sets = []
    for data in load_sets(args, folder):
        sets.append(run_set(data["name"], data, args))
        print(table(sets[-1]["rows"], COLUMNS), flush=True)
    plot(sets, figure)
    _common.write_results(name, {"settings": vars(args), "sets": sets, "figure": str(figure)})

if __name__ == "__main__":
    main()
