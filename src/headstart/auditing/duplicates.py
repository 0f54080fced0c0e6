"""Exact duplicates (the same content: the modality's digest, a hash of a file's bytes or a text's characters) and
near duplicates (cosine similarity of the backbone's embeddings at or above a threshold: the same sentence with
other case or punctuation; also the modality's content fingerprints: the same photo re-encoded or resized, the same
clip with silence in front)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .similarity import scan

# Items are also compared by their content where the modality has fingerprints (`Modality.content_fingerprints`): a
# pair whose fingerprints are at least this alike is a near duplicate whatever the embeddings say.
# - Images: a 16 x 16 grayscale thumbnail, mean removed, as a unit vector, because embeddings alone miss re-encoded
#   copies: measured in benchmarks/audit_images.py (RESULTS.md, "Issue 24"), CIFAR-10 test images resized by 10% and
#   saved as JPEG quality 70 score a median of only 0.83 with their originals in lite0's centred embeddings (11%
#   found at 0.9; no threshold finds 95% while flagging under 1% of the others), while their thumbnails correlate at
#   least 0.999 in 95 of 100 and distinct CIFAR-10 images' nearest at most 0.968.
# - Texts: the text with case, punctuation and spacing folded (equal folded texts score 1, others about 0).
# - Audio: a log spectrogram of the clip with its silent ends trimmed (`audio_fingerprint`): on FSDD, copies with
#   silence in front score 1.0 and resampled ones at least 0.994, distinct recordings at most 0.914
#   (benchmarks/audit_audio.py, RESULTS.md "Issue 24, twelfth round").
CONTENT_THRESHOLD = 0.99


@dataclass
class DuplicatePair:
    """Items `a` and `b` (indices; with `against`, b indexes the other data set) that are the same content
    (`exact`) or embed almost alike (`similarity`)."""

    a: int
    b: int
    similarity: float
    exact: bool
    same_content: bool = False  # exact, or found by the content fingerprints (CONTENT_THRESHOLD), whatever the
    # embeddings say
    content_similarity: float | None = None  # the fingerprints' similarity where it reached CONTENT_THRESHOLD


def image_fingerprints(items: Sequence) -> np.ndarray:
    """The image modality's content fingerprints (grayscale thumbnails, `ImageModality.content_fingerprints`)."""
    from ..modalities import get_modality

    return get_modality("image").content_fingerprints(items)


def exact_pairs_within(digests: Sequence[bytes]) -> list[tuple[int, int]]:
    """(first, later) for every later item whose content equals an earlier one's."""
    first: dict[bytes, int] = {}
    pairs = []
    for i, d in enumerate(digests):
        if d in first:
            pairs.append((first[d], i))
        else:
            first[d] = i
    return pairs


def exact_pairs_across(digests: Sequence[bytes], other: Sequence[bytes]) -> list[tuple[int, int]]:
    """(i, j) for every item i whose content is that of item j of the other data (its first such item)."""
    where: dict[bytes, int] = {}
    for j, d in enumerate(other):
        where.setdefault(d, j)
    return [(i, where[d]) for i, d in enumerate(digests) if d in where]


def duplicate_pairs(digests: Sequence[bytes], unit: np.ndarray, threshold: float, other_digests: Sequence[bytes] |
                    None = None, other_unit: np.ndarray | None = None, k: int = 0,
                    fingerprints: np.ndarray | None = None, other_fingerprints: np.ndarray | None = None
                    ) -> tuple[list[DuplicatePair], np.ndarray, np.ndarray]:
    """Exact and near duplicate pairs within the items (or between them and the other data when given), and the
    scan's `k` nearest neighbours of each item (within the items only). Near pairs of items with the same content
    are left to the exact pairs, which name each copy once (first, later) instead of every pair of copies.
    `fingerprints` (the modality's `content_fingerprints`): a pair whose fingerprints' similarity reaches
    CONTENT_THRESHOLD is a near duplicate too, whatever its embeddings' similarity."""
    across = other_unit is not None
    if across:
        exact = exact_pairs_across(digests, other_digests)
        found = scan(unit, other_unit, threshold)
    else:
        exact = exact_pairs_within(digests)
        found = scan(unit, None, threshold, k)
    references = other_unit if across else unit
    pairs = [DuplicatePair(a, b, float(unit[a] @ references[b]), True, True) for a, b in exact]
    other = other_digests if across else digests
    near = {(a, b): DuplicatePair(a, b, float(s), False)
            for (a, b), s in zip(found.pairs.tolist(), found.pair_similarity.tolist()) if digests[a] != other[b]}
    if fingerprints is not None:
        same = scan(fingerprints, other_fingerprints if across else None, CONTENT_THRESHOLD)
        for (a, b), content in zip(same.pairs.tolist(), same.pair_similarity.tolist()):
            if digests[a] != other[b]:
                pair = near.setdefault((a, b), DuplicatePair(a, b, float(unit[a] @ references[b]), False))
                pair.same_content, pair.content_similarity = True, float(content)
    pairs += near.values()
    pairs.sort(key=lambda p: (not p.exact, not p.same_content, -p.similarity, p.a, p.b))  # certain copies first
    return pairs, found.neighbours, found.neighbour_similarity
