"""Training batches carry each task's labels as its loss needs them: class indices for one-label classification,
float rows for a multi-label indicator matrix or regression targets (a finetune of those tasks once failed on its
first batch, where every modality turned a label into int)."""

from __future__ import annotations

import numpy as np
import torch

from headstart.modalities.base import item_label, stack_labels
from headstart.modalities.image import ImageTensors
from headstart.modalities.text import TextModality

CLASSES = np.array([2, 0, 1])
MULTILABEL = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], np.float32)
TARGETS = np.array([[3.1, 2.5], [2.0, 4.25], [1.5, 3.0]], np.float32)


def test_a_class_index_stays_an_integer_and_a_row_stays_its_values():
    assert item_label(CLASSES, 0) == 2 and isinstance(item_label(CLASSES, 0), int)
    assert item_label(None, 0) == -1
    np.testing.assert_array_equal(item_label(TARGETS, 1), [2.0, 4.25])
    assert stack_labels([item_label(CLASSES, i) for i in range(3)]).dtype == torch.int64
    rows = stack_labels([item_label(MULTILABEL, i) for i in range(3)])
    assert rows.dtype == torch.float32 and torch.equal(rows, torch.from_numpy(MULTILABEL))


class _WordBackbone:
    """Just what TextModality.training_loader asks of a text backbone."""

    def collate(self, texts):
        return list(texts)

    def token_lengths(self, texts):
        return [len(t.split()) for t in texts]


def test_text_training_batches_hold_multilabel_rows_and_regression_targets():
    texts = ["one", "two words", "three words here"]
    for labels in (MULTILABEL, TARGETS):
        loader = TextModality().training_loader(_WordBackbone(), texts, labels, batch_size=3, train=False)
        batch_texts, ys = next(iter(loader))
        assert ys.dtype == torch.float32 and ys.shape == (3, labels.shape[1])
        by_text = dict(zip(batch_texts, ys.numpy().tolist()))
        assert by_text == {t: row.tolist() for t, row in zip(texts, labels)}


def test_image_training_items_hold_multilabel_rows():
    images = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(3)]
    dataset = ImageTensors(images, transform=lambda im: torch.zeros(1), labels=MULTILABEL, fallback_shape=(1,))
    _, ys, _, _ = torch.utils.data.default_collate([dataset[i] for i in range(3)])
    assert torch.equal(ys, torch.from_numpy(MULTILABEL))
