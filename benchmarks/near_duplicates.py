"""How many distinct items audit's near-duplicate tests would pair, per data set and threshold: the false side of
`Modality.near_duplicate_threshold` and of the content fingerprints, on sets the thresholds were not chosen on.

For each set: the items' backbone embeddings (mean-centred, as audit compares them) and content fingerprints. A pair
of items with the same content (equal digests, or fingerprints at least CONTENT_THRESHOLD alike: the same text up to
case, punctuation and spacing, the same photo re-encoded, the same clip re-saved) is a copy; every other item whose
nearest neighbour reaches a threshold would be flagged although it is distinct. Printed per threshold: the share of
items in such a distinct pair (what `--write-clean` may drop about half of), and the copies found by content.

  PYTHONPATH=src python benchmarks/near_duplicates.py                 # text: Banking77, TREC-6, SST-2 (minilm)
  PYTHONPATH=src python benchmarks/near_duplicates.py --sets banking77 cifar10 hymenoptera fsdd
  PYTHONPATH=src python benchmarks/near_duplicates.py --smoke
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, shared, start_smoke, table

THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
SETS = {  # name: (modality, backbone, path under the shared data, items)
    "banking77": ("text", "minilm", "text/banking77/train.csv", 3000),
    "trec6": ("text", "minilm", "text/trec6/train.csv", 3000),
    "sst2": ("text", "minilm", "text/sst2/train.csv", 3000),
    "cifar10": ("image", "efficientnet_lite0", "images/cifar10/train", 3000),
    "hymenoptera": ("image", "efficientnet_lite0", "images/hymenoptera", 3000),
    "fsdd": ("audio", "speech_embedding", "audio/fsdd/train", 3000),
}


def sample_items(modality: str, path: Path, items: int, seed: int) -> list:
    """A seeded sample of the set's items (all its labeled parts), as `audit` reads them."""
    from headstart.data import load_data

    raw = load_data(path, modality=modality)
    everything = [x for part in (raw.train, raw.val, raw.test) if part is not None for x in part.items]
    order = np.random.default_rng(seed).permutation(len(everything))[:items]
    return [everything[i] for i in sorted(order)]


def measure(name: str, modality_name: str, backbone: str, items: list) -> list[dict[str, Any]]:
    from headstart.auditing.duplicates import CONTENT_THRESHOLD
    from headstart.auditing.similarity import scan, unit_rows
    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import backbone_cache
    from headstart.embeddings import embed_items
    from headstart.modalities import get_modality

    modality = get_modality(modality_name)
    net = resolve_backbone(backbone, modality=modality_name)
    x, _ = embed_items(net, items, backbone_cache(net, "auto"), "auto")
    unit = unit_rows(x, x.mean(axis=0))
    prints = modality.content_fingerprints(items)
    digests = [modality.digest(item) for item in items]
    copies = scan(prints, None, CONTENT_THRESHOLD).pairs.tolist() if prints is not None else []
    same_digest: dict[bytes, list[int]] = {}
    for i, digest in enumerate(digests):
        same_digest.setdefault(digest, []).append(i)
    copies += [pair for group in same_digest.values() for pair in itertools.combinations(group, 2)]
    same = {tuple(sorted(p)) for p in copies}
    rows = []
    for t in THRESHOLDS:
        pairs = {tuple(sorted(p)) for p in scan(unit, None, t).pairs.tolist()}
        distinct = pairs - same
        in_distinct = {i for p in distinct for i in p}
        rows.append({"set": name, "items": len(items), "threshold": t,
                     "distinct pairs": len(distinct), "items in a distinct pair %": round(100 * len(in_distinct) /
                                                                                          len(items), 2),
                     "copies by content": len(same), "default": t == modality.near_duplicate_threshold})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["banking77", "trec6", "sst2"])
    parser.add_argument("--items", type=int, default=None, help="items sampled per set (default: each set's)")
    parser.add_argument("--seed", type=int, default=0)
    add_smoke_option(parser)
    args = parser.parse_args()
    rows = []
    if args.smoke:
        folder = start_smoke()
        table_path, bert = _common.smoke_text(folder / "text", per_class=10)
        items = sample_items("text", table_path, 20, args.seed)
        rows += measure("smoke", "text", str(bert), [*items, items[0].upper() + "!"])
    else:
        quiet_fits(_common.OUT / "cache")
        for name in args.sets:
            modality, backbone, relative, items = SETS[name]
            rows += measure(name, modality, backbone, sample_items(modality, shared(relative), args.items or items,
                                                                  args.seed))
            print(table([r for r in rows if r["set"] == name], list(rows[0])), flush=True)
    print(table(rows, list(rows[0])))
    _common.write_results("near_duplicates" + ("" if args.smoke else "_" + "_".join(args.sets)),
                          {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
