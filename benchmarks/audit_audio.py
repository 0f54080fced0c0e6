"""Issue 24, audio: how `headstart audit` tells copied recordings from distinct recordings of the same word, on FSDD.

FSDD holds 50 recordings of each digit by each of 6 speakers: distinct clips that a speech embedding places close
together (the same speaker saying the same word). A near-duplicate threshold on the embeddings must find a clip
that was copied (re-encoded) and leave those alone, or `--write-clean` drops correct, distinct clips.

- A seeded pool of `--per-class` clips per digit and a disjoint test set of `--test-per-class` per digit; `--leaks`
  test clips copied into the pool after re-encoding, in turn: resampled to 16 kHz at 0.8 gain as 16-bit PCM, saved
  as FLAC (the same samples, other bytes), with 30 ms of silence in front (the same sound, shifted), and as Ogg
  Vorbis (lossy).
- `audit` of the pool `against` the test set at its default threshold: copies found, distinct clips flagged (as a
  duplicate or leak of another clip, or of a test clip), clips the clean table drops.
- The similarity profile behind it, at several thresholds, for the embeddings and for the clips' content
  fingerprints (`audio_fingerprint`, audit's second test): each copy to its original; each distinct pool clip to
  its most similar other pool clip and to its most similar test clip.

  PYTHONPATH=src python benchmarks/audit_audio.py           # ~1,500 speech embeddings: about a minute
  PYTHONPATH=src python benchmarks/audit_audio.py --smoke
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, shared, start_smoke, table
from audit_images import cifar_sets, timed_audit

THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)
REENCODINGS = ("resampled 16 kHz, gain 0.8", "flac", "30 ms of silence in front", "ogg vorbis (lossy)")


def reencode(source: str, target_stem: Path, how: int) -> str:
    """A copy of the clip at `source`, re-encoded the `how`-th way of REENCODINGS: the same recording, other bytes."""
    import soundfile as sf
    from scipy.signal import resample_poly

    samples, rate = sf.read(source, dtype="float32")
    if how == 0:
        target = target_stem.with_suffix(".wav")
        sf.write(target, np.clip(resample_poly(samples, 2, 1) * 0.8, -1, 1), rate * 2, subtype="PCM_16")
    elif how == 1:
        target = target_stem.with_suffix(".flac")
        sf.write(target, samples, rate)
    elif how == 2:
        target = target_stem.with_suffix(".wav")
        sf.write(target, np.concatenate([np.zeros(int(0.03 * rate), np.float32), samples]), rate, subtype="PCM_16")
    else:
        target = target_stem.with_suffix(".ogg")
        sf.write(target, samples, rate, format="OGG", subtype="VORBIS")
    return str(target)


def build_tables(args: argparse.Namespace, root: Path, folder: Path) -> dict[str, Any]:
    import pandas as pd

    pool, test = cifar_sets(root, args.per_class, args.test_per_class, args.seed)  # any folder of class folders
    train, dev = pd.DataFrame(pool, columns=["path", "label"]), pd.DataFrame(test, columns=["path", "label"])
    rng = np.random.default_rng(args.seed + 1)
    copied = rng.choice(len(dev), min(args.leaks, len(dev)), replace=False)
    copy_folder = folder / "copies"
    copy_folder.mkdir(parents=True, exist_ok=True)
    copies = pd.DataFrame({"path": [reencode(dev.path[j], copy_folder / f"copy{j}", n % len(REENCODINGS))
                                    for n, j in enumerate(copied)], "label": dev.label[copied].values})
    table_path, dev_path = folder / "train.csv", folder / "test.csv"
    pd.concat([train, copies], ignore_index=True).to_csv(table_path, index=False)
    dev.to_csv(dev_path, index=False)
    return {"train": train, "dev": dev, "copied": copied, "copies": copies, "table": table_path, "dev_table": dev_path}


def similarity_profile(backbone: str, data: dict[str, Any]) -> dict[str, Any]:
    """Centred cosine similarities of the embeddings (from the cache the audit filled) and of the content
    fingerprints: `profile` of each."""
    from headstart.auditing.similarity import unit_rows
    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import backbone_cache
    from headstart.embeddings import embed_items
    from headstart.modalities import get_modality

    net = resolve_backbone(backbone, modality="audio")
    store = backbone_cache(net, "auto")
    pool = list(data["train"].path) + list(data["copies"].path)
    x, _ = embed_items(net, pool, store, "auto")
    dev_x, _ = embed_items(net, list(data["dev"].path), store, "auto")
    center = x.mean(axis=0)
    audio = get_modality("audio")
    return {"embeddings": profile(unit_rows(x, center), unit_rows(dev_x, center), data),
            "fingerprints": profile(audio.content_fingerprints(pool), audio.content_fingerprints(list(data["dev"].path)),
                                    data)}


def profile(unit: np.ndarray, dev_unit: np.ndarray, data: dict[str, Any]) -> dict[str, Any]:
    """Copies to their originals, distinct pool clips to their nearest other pool clip and nearest test clip (unit
    rows: pool then copies, and the test clips); found / flagged shares at each threshold."""
    from headstart.auditing.similarity import scan

    n = len(data["train"])
    copy_sims = np.einsum("ij,ij->i", unit[n:], dev_unit[data["copied"]])
    nearest_pool = scan(unit[:n], None, None, k=1).neighbour_similarity[:, 0]
    nearest_dev = scan(unit[:n], dev_unit, None, k=1).neighbour_similarity[:, 0]
    by_kind = {how: copy_sims[np.arange(len(copy_sims)) % len(REENCODINGS) == k] for k, how in enumerate(REENCODINGS)}
    rows = [{"threshold": t, "copies found %": round(100 * float((copy_sims >= t).mean()), 1),
             **{f"found % ({how.split(',')[0]})": round(100 * float((s >= t).mean()), 1) for how, s in by_kind.items()},
             "distinct clips with a pool twin %": round(100 * float((nearest_pool >= t).mean()), 2),
             "distinct clips with a test twin %": round(100 * float((nearest_dev >= t).mean()), 2)}
            for t in THRESHOLDS]
    return {"copy_similarity": {how: {"min": float(s.min()), "median": float(np.median(s))} for how, s in by_kind.items()},
            "distinct_nearest_pool": {"p99": float(np.percentile(nearest_pool, 99)), "max": float(nearest_pool.max())},
            "distinct_nearest_test": {"p99": float(np.percentile(nearest_dev, 99)), "max": float(nearest_dev.max())},
            "thresholds": rows}


def audit_row(result: Any, data: dict[str, Any], clean_rows: int, seconds: float) -> dict[str, Any]:
    """Copies found, and distinct clips flagged as a copy (and dropped by the clean table), by `audit` at its
    threshold."""
    n = len(data["train"])
    paired = {"duplicate", "leak", "conflicting", "against"}
    flagged = {int(r["index"]) for r in result.records if r["kind"] in paired}
    flagged |= {int(r["other_index"]) for r in result.records if r["kind"] in paired - {"against"}}
    copies = set(range(n, n + len(data["copies"])))
    found_against = {int(r["index"]) for r in result.records if r["kind"] == "against"} & copies
    kinds = {how: {n + c for c in range(len(copies)) if c % len(REENCODINGS) == k} for k, how in enumerate(REENCODINGS)}
    return {"threshold": result.near_threshold, "copies": len(copies),
            "copies found %": round(100 * len(found_against) / len(copies), 1),
            **{f"found % ({how.split(',')[0]})": round(100 * len(found_against & ids) / len(ids), 1)
               for how, ids in kinds.items()},
            "distinct clips flagged %": round(100 * len(flagged - copies) / n, 2),
            "distinct clips dropped as copies %": round(100 * sum(1 for i in flagged - copies if not result.keep[i]) / n, 2),
            "clean rows": clean_rows, "audit s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="speech_embedding")
    parser.add_argument("--per-class", type=int, default=120, help="FSDD clips audited per digit")
    parser.add_argument("--test-per-class", type=int, default=30, help="other clips per digit: the --against set")
    parser.add_argument("--leaks", type=int, default=100, help="test clips copied (re-encoded) into the pool")
    parser.add_argument("--near-threshold", type=float, default=None, help="passed to audit (default: audit's)")
    parser.add_argument("--seed", type=int, default=0)
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:
        folder = start_smoke()
        root = _common.smoke_audio(folder / "audio", per_class=8)
        args.per_class, args.test_per_class, args.leaks = 5, 3, len(REENCODINGS)
    else:
        root = shared("audio/fsdd/train")
        folder = _common.OUT / "audit_audio"
        folder.mkdir(parents=True, exist_ok=True)
        quiet_fits(_common.OUT / "cache")
    import pandas as pd


    data = build_tables(args, root, folder)
    load_before = os.getloadavg()
    result, seconds = timed_audit(data, args, folder)
    profile = similarity_profile(args.backbone, data)
    row = audit_row(result, data, len(pd.read_csv(folder / "clean.csv")), seconds)
    print(table([row], list(row)))
    for what, found in profile.items():
        print(f"\n{what}:\n" + table(found["thresholds"], list(found["thresholds"][0])))
        print(f"copies to their originals {found['copy_similarity']}; distinct clips' nearest pool clip "
              f"{found['distinct_nearest_pool']}, nearest test clip {found['distinct_nearest_test']}")
    _common.write_results("audit_audio", {"settings": vars(args), "result": row, "similarity": profile,
                                          "audit_seconds": result.seconds,
                                          "load_average": [load_before, os.getloadavg()]})


if __name__ == "__main__":
    main()
