"""Issue 24 acceptance, image part: how well `headstart audit` finds wrong labels and leaked test items in CIFAR-10.

- Label errors: a seeded class-balanced subset of CIFAR-10 train (`--per-class`, default 500: 5,000 items) with 10%
  of its labels flipped (seeded); `audit` with efficientnet_lite0 flags items; precision and recall of the flagged
  set against the flipped set. Then the accuracy a logistic-regression probe on the same cached embeddings reaches
  on a held-out test set (`--test-per-class`, default 100: 1,000 other CIFAR-10 train images; the shared copy has
  no test split) when fitted on the original labels, the noisy labels, and the `--write-clean` table: the share of
  the accuracy lost to the noise that the clean table recovers.
- Leaks: 100 test images copied into the training table after re-encoding (resized by 10%, 32 -> 35 px, and saved
  as JPEG quality 70), audited `against` the test set: the share of copies found and of the other training items
  wrongly flagged, at the default near-duplicate threshold, and the similarity profile behind it (each copy to its
  original, each other item to its most similar test item) with found/false-flag rates at other thresholds, for the
  embeddings and for the images' grayscale thumbnails (`image_fingerprints`, audit's second test for images).

The lite0 embeddings are cached (HEADSTART_CACHE, default benchmarks/out/cache); benchmarks/suggest_curves.py reuses
the same images (`cifar_sets`), so they are embedded once.

  PYTHONPATH=src python benchmarks/audit_images.py        # 6,100 lite0 embeddings: ~5 CPU minutes, then seconds
  PYTHONPATH=src python benchmarks/audit_images.py --smoke
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, shared, start_smoke
from audit_quality import score_and_print

THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def cifar_sets(root: Path, per_class: int, test_per_class: int, seed: int) -> tuple[list, list]:
    """(path, class) pairs of a seeded class-balanced pool of `per_class` images per class and a disjoint test set
    of `test_per_class` per class, from a folder of class folders."""
    rng = np.random.default_rng(seed)
    pool, test = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        order = rng.permutation(len(files))
        pool += [(str(files[i]), folder.name) for i in order[:per_class]]
        test += [(str(files[i]), folder.name) for i in order[per_class:per_class + test_per_class]]
    return pool, test


def reencode(source: str, target: Path, scale: float = 1.1, quality: int = 70) -> str:
    """A copy of an image resized by `scale` (bicubic) and saved as JPEG at `quality`: the same photo, other bytes."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.resize(size, Image.BICUBIC).save(target, "JPEG", quality=quality)
    return str(target)


def build_tables(args: argparse.Namespace, root: Path, folder: Path) -> dict[str, Any]:
    """The noisy training table (path,label; the re-encoded test copies appended), the test table, the truth."""
    import pandas as pd

    pool, test = cifar_sets(root, args.per_class, args.test_per_class, args.seed)
    train = pd.DataFrame(pool, columns=["path", "label"])
    dev = pd.DataFrame(test, columns=["path", "label"])
    rng = np.random.default_rng(args.seed + 1)
    classes = sorted(train.label.unique())
    flipped = rng.choice(len(train), round(args.noise * len(train)), replace=False)
    noisy = train.copy()
    noisy.loc[flipped, "label"] = [rng.choice([c for c in classes if c != label]) for label in train.label[flipped]]
    copied = rng.choice(len(dev), min(args.leaks, len(dev)), replace=False)
    copy_folder = folder / "copies"
    copy_folder.mkdir(parents=True, exist_ok=True)
    copies = pd.DataFrame({"path": [reencode(dev.path[j], copy_folder / f"copy{j}.jpg") for j in copied],
                           "label": dev.label[copied].values})
    table_path = folder / "train-noisy.csv"
    pd.concat([noisy, copies], ignore_index=True).to_csv(table_path, index=False)
    dev_path = folder / "test.csv"
    dev.to_csv(dev_path, index=False)
    return {"train": train, "noisy": noisy, "dev": dev, "flipped": set(flipped.tolist()), "copied": copied,
            "copies": copies, "table": table_path, "dev_table": dev_path}


def similarity_profile(backbone: str, data: dict[str, Any], image_size: int | None) -> dict[str, Any]:
    """Centred cosine similarity of each copy to its original and of each original training item to its most
    similar test item (from the cache the audit filled), with the found/false-flag rates at several thresholds."""
    from headstart.auditing.duplicates import image_fingerprints
    from headstart.auditing.similarity import scan, unit_rows
    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import backbone_cache
    from headstart.embeddings import embed_items

    net = resolve_backbone(backbone, image_size=image_size, modality="image")
    store = backbone_cache(net, "auto")
    x, _ = embed_items(net, list(data["noisy"].path) + list(data["copies"].path), store, "auto")
    dev_x, _ = embed_items(net, list(data["dev"].path), store, "auto")
    center = x.mean(axis=0)
    unit, dev_unit = unit_rows(x, center), unit_rows(dev_x, center)
    n = len(data["noisy"])
    copy_sims = np.einsum("ij,ij->i", unit[n:], dev_unit[data["copied"]])
    nearest_dev = scan(unit[:n], dev_unit, None, k=1).neighbour_similarity[:, 0]
    rows = [{"threshold": t, "copies found %": round(100 * float((copy_sims >= t).mean()), 1),
             "others flagged %": round(100 * float((nearest_dev >= t).mean()), 2)} for t in THRESHOLDS]
    prints = image_fingerprints(list(data["noisy"].path) + list(data["copies"].path))
    dev_prints = image_fingerprints(list(data["dev"].path))
    copy_pixels = np.einsum("ij,ij->i", prints[n:], dev_prints[data["copied"]])
    nearest_pixels = scan(prints[:n], dev_prints, None, k=1).neighbour_similarity[:, 0]
    rows += [{"threshold": f"thumbnail {t}", "copies found %": round(100 * float((copy_pixels >= t).mean()), 1),
              "others flagged %": round(100 * float((nearest_pixels >= t).mean()), 2)} for t in (0.95, 0.98, 0.99)]
    return {"copy_similarity": {"min": float(copy_sims.min()), "p5": float(np.percentile(copy_sims, 5)),
                                "median": float(np.median(copy_sims))},
            "others_nearest_dev": {"p99": float(np.percentile(nearest_dev, 99)), "max": float(nearest_dev.max())},
            "copy_thumbnail_similarity": {"min": float(copy_pixels.min()), "p5": float(np.percentile(copy_pixels, 5))},
            "others_nearest_dev_thumbnail": {"p99": float(np.percentile(nearest_pixels, 99)),
                                             "max": float(nearest_pixels.max())},
            "thresholds": rows, "embeddings": (x, dev_x)}


def timed_audit(data: dict[str, Any], args: argparse.Namespace, folder: Path, **options: Any) -> tuple[Any, float]:
    """`audit` of the built training table against the test table (the clean table into `folder`), at
    `--near-threshold` where given, and its wall seconds."""
    import headstart

    if args.near_threshold is not None:
        options["near_threshold"] = args.near_threshold
    started = time.perf_counter()
    result = headstart.audit(data["table"], args.backbone, against=data["dev_table"], seed=args.seed,
                             write_clean=folder / "clean.csv", **options)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--per-class", type=int, default=500, help="CIFAR-10 training images audited per class")
    parser.add_argument("--test-per-class", type=int, default=100,
                        help="other CIFAR-10 images per class: the --against set and the accuracy test")
    parser.add_argument("--leaks", type=int, default=100, help="test images copied (re-encoded) into the train table")
    parser.add_argument("--noise", type=float, default=0.1, help="share of training labels flipped")
    parser.add_argument("--near-threshold", type=float, default=None, help="passed to audit (default: audit's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None)
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:
        folder = start_smoke()
        root = _common.smoke_images(folder / "images", per_class=14)
        args.backbone, args.per_class, args.test_per_class, args.leaks, args.image_size = "smallcnn", 10, 4, 3, 32
    else:
        root = shared("images/cifar10/train")
        folder = _common.OUT / "audit_images"
        folder.mkdir(parents=True, exist_ok=True)
        quiet_fits(_common.OUT / "cache")
    import pandas as pd


    data = build_tables(args, root, folder)
    load_before = os.getloadavg()
    result, seconds = timed_audit(data, args, folder, image_size=args.image_size)
    profile = similarity_profile(args.backbone, data, args.image_size)
    clean = pd.read_csv(folder / "clean.csv")
    row, reference = score_and_print(result, data, profile, len(clean), seconds, args.seed, held_out="test",
                                     threshold=result.near_threshold)
    print(f"thumbnails: copy {profile['copy_thumbnail_similarity']}; other items' nearest test item "
          f"{profile['others_nearest_dev_thumbnail']}")
    print(f"load average before the audit {load_before}, after {os.getloadavg()}")
    _common.write_results("audit_images", {"settings": vars(args), "result": row, "cleanlab_reference": reference,
                                           "similarity": profile,
                                           "audit_seconds": result.seconds, "load_average": [load_before,
                                                                                             os.getloadavg()],
                                           "overlapping_classes": result.overlapping_classes})


if __name__ == "__main__":
    main()
