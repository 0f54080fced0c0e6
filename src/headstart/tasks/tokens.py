"""`tokens`: a tag per word (named entities and other spans, BIO or BIOES), from a text encoder's last hidden
states, as BERT's paper fine-tunes it for CoNLL-2003 NER (Devlin et al. 2019, section 5.3).

Each word's label sits on its first sub-word; the other sub-words are ignored by the loss (-100). A sentence longer
than the backbone's max_length is cut into overlapping windows (the fast tokenizer's overflow with a stride), and
each word is predicted from the window where it lies farthest from an edge, so that every word is labeled once in
training and stitched back from one window at prediction. Metrics are entity-level precision, recall and F1 with
exact span and type (`seqeval`, as conlleval counts them), per type, and token accuracy.

An item is the sentence's words joined by single spaces (CoNLL words hold no whitespace), so that the data, the
splits, the item digests and the previews treat it as a text; labels are items x words, padded with -100.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError, SettingsError
from ..runtime.entities import WordScores, entities
from ..runtime.token_windows import Window, encode_windows, pad_windows, word_scores
from .base import Cells, Task, register_task

IGNORE = -100  # the label of sub-words and padding: cross-entropy's ignore_index
TAG = re.compile(r"^(?:O|[BIES]-\S+)$")


def tag_parts(tag: str) -> tuple[str, str]:
    """("B", "PER") of "B-PER"; ("O", "") of "O"."""
    prefix, _, kind = tag.partition("-")
    return (prefix, kind) if kind else ("O", "")


def check_tags(sentences: list[list[str]], locate: Callable[[int, int], str], repair: bool
               ) -> tuple[list[list[str]], int]:
    """The sentences' tags checked as BIO/BIOES: a tag must be O, B-X, I-X, E-X or S-X, and an I-X or E-X must
    continue an X entity (follow B-X or I-X). A broken continuation is an error naming its place (`locate(sentence,
    word)`), or with `repair` it starts the entity instead (I-X -> B-X, E-X -> S-X). Returns the tags and how many
    were repaired. Hand-written because seqeval only reads tags leniently (it never says which one is wrong)."""
    repaired = 0
    fixed_sentences = []
    for s, tags in enumerate(sentences):
        fixed, previous = [], "O"
        for w, tag in enumerate(tags):
            if not TAG.match(tag):
                raise DataError(f"{locate(s, w)}: tag '{tag}' is not a BIO/BIOES tag (O, B-TYPE, I-TYPE, E-TYPE or "
                                "S-TYPE)")
            prefix, kind = tag_parts(tag)
            before, kind_before = tag_parts(previous)
            if prefix in ("I", "E") and not (before in ("B", "I") and kind_before == kind):
                if not repair:
                    raise DataError(f"{locate(s, w)}: {tag} follows {previous} (an entity starts with B-{kind}): fix "
                                    "the tags, or let headstart start the entity there with --repair-tags "
                                    "(Python: repair_tags=True)")
                tag, repaired = ("B-" if prefix == "I" else "S-") + kind, repaired + 1
            fixed.append(tag)
            previous = tag
        fixed_sentences.append(fixed)
    return fixed_sentences, repaired


def backend_tokenizer(backbone: Any) -> Any:
    """The backbone's fast tokenizer as a `tokenizers.Tokenizer` (what the windows are cut with, here and in an
    exported graph's runtime); a slow tokenizer has no word ids."""
    tokenizer = backbone.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise SettingsError("token tagging needs a backbone with a fast tokenizer (tokenizer.json) for its word_ids")
    return tokenizer.backend_tokenizer


def backbone_windows(backbone: Any, sentences: Sequence[Sequence[str]]) -> list[Window]:
    """The sentences as the backbone's windows (runtime.token_windows.encode_windows with its tokenizer)."""
    return encode_windows(backend_tokenizer(backbone), sentences, backbone.max_length, _type_ids(backbone))


def _type_ids(backbone: Any) -> bool:
    return "token_type_ids" in getattr(backbone.tokenizer, "model_input_names", ())


def torch_windows(windows: Sequence[Window], pad_id: int, length: int | None = None) -> dict[str, Any]:
    """A batch of windows as tensors, padded to the longest (or to `length`)."""
    import torch

    return {k: torch.from_numpy(v) for k, v in pad_windows(windows, pad_id, length).items()}


def window_labels(windows: Sequence[Window], labels: np.ndarray, length: int) -> Any:
    """Each window's labels per sub-word: the word's tag on the first sub-word of each word it owns, -100
    elsewhere."""
    import torch

    out = torch.full((len(windows), length), IGNORE, dtype=torch.long)
    for i, w in enumerate(windows):
        for position, word in w.owned:
            out[i, position] = int(labels[w.sentence][word])
    return out


class LengthGroupedBatches:
    """Training batches of windows of similar length, reshuffled from (seed, epoch) at every epoch: a seeded
    permutation cut into groups of 50 batches, each group sorted by length and cut into batches, the batches
    shuffled. Hand-written for the same idea as Hugging Face's LengthGroupedSampler (which the text modality uses)
    because that gives item indices, not batches, and tasks sit below the modalities; a batch of tweets then
    pads to its own length rather than to the longest window of the data set."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = np.asarray(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        group = 50 * self.batch_size
        batches = []
        for start in range(0, len(order), group):
            chunk = order[start:start + group]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        return (b.tolist() for b in self._batches())


class _WindowData:
    """Windows with their labels as a map-style data set (index -> window)."""

    def __init__(self, windows: list[Window]):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Window:
        return self.windows[i]


def type_confusion(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict[str, dict[str, int]]:
    """Entities by true type (rows) and what was predicted over exactly their span (columns): a type, or
    "(missed)" where no predicted entity has that span; the row "(none)" counts predicted spans that are no true
    entity's. Hand-written because seqeval counts matches, not what an entity was mistaken for."""
    from seqeval.metrics.sequence_labeling import get_entities

    confusion: dict[str, dict[str, int]] = {}
    for gold, got in zip(y_true, y_pred):
        true = {(a, b): kind for kind, a, b in get_entities(list(gold))}
        predicted = {(a, b): kind for kind, a, b in get_entities(list(got))}
        pairs = [(kind, predicted.get(span, "(missed)")) for span, kind in true.items()]
        pairs += [("(none)", kind) for span, kind in predicted.items() if span not in true]
        for row, column in pairs:
            confusion.setdefault(row, {})
            confusion[row][column] = confusion[row].get(column, 0) + 1
    return confusion


@register_task
@dataclass
class TokenTagging(Task):
    """Settings: `repair_tags`, start an entity at an I-X that follows O (or another type) instead of refusing
    the data."""

    name = "tokens"
    noun = "tag"
    headline = ("f1", "precision", "recall", "token_accuracy")
    val_metric = "val_f1"
    per_token = True
    default_strategy = "finetune"  # WNUT-17, minilm: finetune 0.427 entity F1 on dev (benchmarks/RESULTS.md)

    repair_tags: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.repair_tags, bool):
            raise SettingsError(f"repair_tags (--repair-tags) must be true or false, got {self.repair_tags!r}")

    # -- labels ------------------------------------------------------------------------------------------------------
    def encode(self, cells: Cells, where: Any, columns: Sequence[str], names: Sequence[str] | None
               ) -> tuple[np.ndarray, list[str]]:
        """`cells`: per sentence, its (checked) tags; labels are sentences x words, padded with -100."""
        if names is None:
            seen = sorted({t for tags in cells for t in tags})
            names = (["O"] if "O" in seen else []) + [t for t in seen if t != "O"]
            if len(names) < 2:
                raise DataError(f"{where}: every word has the tag {names[0]}: there is nothing to learn; a tagger "
                                "needs at least two tags (O and the entities' B-/I- tags)")
        index = {t: i for i, t in enumerate(names)}
        unknown = sorted({t for tags in cells for t in tags} - set(index))
        if unknown:
            raise DataError(f"{where} has tags not seen in training: {', '.join(unknown[:10])}")
        width = max((len(tags) for tags in cells), default=0)
        labels = np.full((len(cells), width), IGNORE, np.int64)
        for i, tags in enumerate(cells):
            labels[i, :len(tags)] = [index[t] for t in tags]
        return labels, list(names)

    def as_labels(self, labels: Any, n_names: int | None = None) -> np.ndarray:
        array = np.asarray(labels, dtype=np.int64)
        if array.ndim != 2:
            raise ValueError(f"token tags must be a sentences x words array of tag ids, got shape {array.shape}")
        return array

    def counts(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
        """Words per tag."""
        kept = labels[labels != IGNORE]
        return {t: int(n) for t, n in zip(names, np.bincount(kept, minlength=len(names)))}

    def describe(self, names: Sequence[str]) -> str:
        kinds = sorted({tag_parts(t)[1] for t in names} - {""})
        return f"{len(names)} tags over {len(kinds)} entity types ({', '.join(kinds)})"

    # -- the model ---------------------------------------------------------------------------------------------------
    def features(self, backbone: Any, batch: Any) -> Any:
        """The encoder's last hidden states, one per sub-word (batch x sub-words x width)."""
        return backbone.token_states(batch)

    def frozen_features(self, backbone: Any, items: Any, labels: np.ndarray, precision: str) -> np.ndarray:
        """Per sentence and word, the encoder's last hidden state at the word's first sub-word, taken from the
        window that owns the word, exactly as prediction reads it (`word_scores` with the encoder in place of the
        tagger): sentences x words x width, aligned with `labels` (zeros past a sentence's last word, where the
        labels are -100). The probe's one encoder pass: its head then trains on these vectors alone. Not kept in
        the embedding cache, which holds one row per item."""
        import torch

        from .._util import default_device, precision_dtype

        device = default_device()
        encoder = backbone.inference_copy(device, fold=False)
        dtype = precision_dtype(precision, device)
        width = int(backbone.embedding_dim)

        def run(batch: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                        enabled=dtype is not None):
                x = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
                return self.features(encoder, x).float().cpu().numpy()

        rows = word_scores(items, True, backend_tokenizer(backbone), backbone.max_length,
                           int(backbone.tokenizer.pad_token_id or 0), width, run, None, _type_ids(backbone))
        out = np.zeros((*np.shape(labels)[:2], width), np.float32)
        for i, sentence in enumerate(rows):
            out[i, :len(sentence.probs)] = sentence.probs
        return out

    def labeled_rows(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The vectors of real words (the padding past each sentence's end left out)."""
        return features[np.asarray(labels) != IGNORE]

    def training_loader(self, modality: Any, backbone: Any, items: Any, labels: np.ndarray, batch_size: int,
                        train: bool, seed: int = 0) -> Any:
        """Windows of the sentences with their aligned labels; for training in batches of similar length
        (shuffled, seeded by epoch), for validation padded to max_length (so that its batches' logits join)."""
        import torch

        windows = backbone_windows(backbone, [str(t).split(" ") for t in items])
        pad_id = int(backbone.tokenizer.pad_token_id or 0)
        length = None if train else backbone.max_length

        def collate(batch: list[Window]) -> tuple[dict[str, Any], Any]:
            x = torch_windows(batch, pad_id, length)
            return x, window_labels(batch, labels, x["input_ids"].shape[1])

        data = _WindowData(windows)
        if train:
            batches = LengthGroupedBatches([len(w.inputs["input_ids"]) for w in windows], batch_size, seed)
            return torch.utils.data.DataLoader(data, batch_sampler=batches, collate_fn=collate)
        return torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate)

    def scores(self, logits: Any, params: dict[str, Any]) -> Any:
        import torch

        return torch.softmax(logits / float(params.get("temperature", 1.0)), dim=-1)

    def loss(self, logits: Any, targets: Any, params: dict[str, Any], weight: Any = None, smoothing: float = 0.0
             ) -> Any:
        import torch

        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 weight=weight, ignore_index=IGNORE, label_smoothing=smoothing)

    def validation_score(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any]) -> float:
        """Entity F1 over the validation windows (each word counted once, in the window that owns it)."""
        from seqeval.metrics import f1_score

        names = params.get("tags")
        predicted = np.asarray(logits).argmax(-1)
        y_true, y_pred = [], []
        for row_labels, row_predicted in zip(np.asarray(labels), predicted):
            keep = row_labels != IGNORE
            y_true.append([names[i] for i in row_labels[keep]])
            y_pred.append([names[i] for i in row_predicted[keep]])
        return float(f1_score(y_true, y_pred, zero_division=0))

    def initial_params(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
        return {"tags": list(names)}  # validation_score reads entities from the tag names

    def tune(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any], calibrate: bool, seed: int
             ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return {**params, "temperature": 1.0}, None  # nothing is tuned: entities come from each word's argmax

    # -- scoring and results -----------------------------------------------------------------------------------------
    def score_items(self, classifier: Any, items: Any, precision: str, model: Any, batch_size: int | None,
                    words_given: bool) -> tuple[list[Any], list[tuple[int, str]]]:
        """Per text, its words and their tag probabilities. Words: labeled data's own (the item's words joined by
        spaces), or those `find_words` finds in raw text, so that entity offsets are offsets into the input."""
        import torch

        backbone = model if model is not None else classifier.backbone
        head = classifier.head
        device = next(backbone.parameters()).device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

        def run(batch: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode(), autocast:
                x = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
                return head.scores(self.features(backbone, x).float()).float().cpu().numpy()

        head.eval()
        scores = word_scores(items, words_given, backend_tokenizer(backbone), backbone.max_length,
                             int(backbone.tokenizer.pad_token_id or 0), head.config["n_classes"], run, batch_size,
                             _type_ids(backbone))
        return scores, []

    def metrics(self, labels: np.ndarray, scores: Sequence[WordScores], names: Sequence[str], params: dict[str, Any]
                ) -> dict[str, Any]:
        """Entity precision, recall and F1 (exact span and type; micro over entities, and macro over types), per
        type, and token accuracy, as seqeval computes them."""
        from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

        y_true = [[names[i] for i in row[row != IGNORE]] for row in np.asarray(labels)]
        y_pred = [s.tags(names) for s in scores]
        for i, (gold, got) in enumerate(zip(y_true, y_pred)):
            if len(gold) != len(got):
                raise DataError(f"sentence {i + 1} has {len(gold)} tags but {len(got)} words")
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
        per_type = {kind: {"precision": float(m["precision"]), "recall": float(m["recall"]),
                           "f1": float(m["f1-score"]), "support": int(m["support"])}
                    for kind, m in report.items() if not kind.endswith(" avg")}
        return {"n": len(y_true), "words": sum(len(t) for t in y_true),
                "f1": float(f1_score(y_true, y_pred, zero_division=0)),
                "precision": float(precision_score(y_true, y_pred, zero_division=0)),
                "recall": float(recall_score(y_true, y_pred, zero_division=0)),
                "macro_f1": float(report["macro avg"]["f1-score"]) if "macro avg" in report else 0.0,
                "token_accuracy": float(accuracy_score(y_true, y_pred)),
                "entities": sum(m["support"] for m in per_type.values()),
                "predicted_entities": sum(len(entities(s, names)) for s in scores),
                "per_type": per_type, "type_confusion": type_confusion(y_true, y_pred)}

    def decide(self, scores: Sequence[WordScores], names: Sequence[str], params: dict[str, Any]) -> list[Any]:
        """Per text, its entities: {type, start, end, text, score} with character offsets into the input."""
        return [entities(s, names) for s in scores]

    def agreement(self, reference: Sequence[WordScores], got: Sequence[WordScores], names: Sequence[str],
                  params: dict[str, Any]) -> float:
        """How often two runs' scores give the same tag to a word."""
        same = [a == b for r, g in zip(reference, got) for a, b in zip(r.tags(names), g.tags(names))]
        return float(np.mean(same)) if same else 1.0
