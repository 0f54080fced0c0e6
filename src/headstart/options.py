"""Option objects: the settings that travel together through `fit`, `select`, `pretrain` and `distill`, grouped
by what they are about instead of passed one by one.

- `BackboneOptions`: which pre-trained network, and how it is loaded (weights, input size, token limit);
- `DataOptions`: how the labeled data are read and split (columns, split sizes, held-out test data);
- `RunOptions`: how the run computes and where it may write (seed, precision, cache, resume, logger);
- `TaskOptions`: what is predicted and the task's settings.

Each is a frozen dataclass whose fields are validated on creation, with the help a command line shows
(`settings.setting`): the `headstart` command builds its options from these fields (cli_options), so that an option
added here is an option of the command too. A new setting (such as an extraction engine beside `precision`) is
one field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import SettingsError
from .extraction_engines import check_engine
from .model import EVALUATION_PRECISION
from .settings import PRECISIONS, check_choice, check_range, setting
from .training import check_logger

if TYPE_CHECKING:
    from .backbones.base import Backbone
    from .data import Dataset, PseudoLabels
    from .tasks import Task


def split_size(value: str | float | int) -> float | int:
    """A split size as the command line or a config file gives it: '0.2' is a fraction, '500' a count."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value) if "." in str(value) else int(value)
    except ValueError:
        raise SettingsError(f"split size must be a fraction like 0.2 or a count like 500, got '{value}'") from None


LOGGER_HELP = ("Where the training curves go: csv (RUN/logs/version_N/metrics.csv), tensorboard (event files in "
               "RUN/logs) or mlflow (RUN/logs/mlflow.db, or MLFLOW_TRACKING_URI when set); see docs/strategies.md.")


@dataclass(frozen=True)
class BackboneOptions:
    """Which pre-trained network to start from and how it is loaded (`backbones.resolve_backbone`)."""

    name: str = setting("efficientnet_lite0", "Backbone name (see `headstart backbones`) or folder.", flag="backbone")
    weights: str | None = setting(None, "Local weights: a file or folder (timm), a safetensors file (smallcnn).")
    pretrained: bool = setting(True, "Start from the backbone's published weights (--no-pretrained: random).")
    image_size: int | None = setting(None, "Input size for image backbones (default: backbone's).")
    max_length: int | None = setting(None, "Token limit for text backbones (default 128).")

    def __post_init__(self) -> None:
        check_range("image_size", self.image_size, low=1, integer=True)
        check_range("max_length", self.max_length, low=1, integer=True)

    def resolve(self, modality: str | None = None) -> Backbone:
        """The backbone these options name, loaded for data of `modality`."""
        from .backbones import resolve_backbone

        return resolve_backbone(self.name, weights=self.weights, pretrained=self.pretrained,
                                image_size=self.image_size, max_length=self.max_length, modality=modality)


@dataclass(frozen=True)
class DataOptions:
    """How the labeled data are read and split; `fit` records them in the model's manifest.

    `test`: labeled held-out data (anything `fit`'s data can be but Splits; its own test split if it defines one)
    to test on instead of a split cut from the data (which then ignores `test_size`); its classes must be the
    training classes. A test/ folder beside train/ is used the same way. `strict`: an unreadable item is an error
    instead of being left out with a count. `pseudo_labels` (set by `distill`): a teacher's labels for unlabeled
    items, added to the training split after splitting, so that validation and test are the real ones the teacher
    had; the manifest records their origin.
    """

    text_column: str | None = setting(None, "The table column of the texts (or file paths); default: by name.")
    label_column: str | None = setting(None, "The table column of the labels; default: found by name.")
    val_size: float | int = setting(0.1, "Validation split when the data define none: fraction or count.",
                                    parse=split_size)
    test_size: float | int = setting(0.2, "Test split when the data define none and no --test: fraction or count.",
                                     parse=split_size)
    labels_per_class: int | None = setting(None, "Keep N labeled training examples per class.")
    test: str | Path | Dataset | None = setting(None, "Labeled held-out data to test on (folder, table or built-in, "
                                                      "with the training classes) instead of a split cut from DATA.")
    strict: bool = setting(False, "Fail on unreadable images instead of skipping them.")
    pseudo_labels: PseudoLabels | None = setting(None, cli=False)  # `distill`: a teacher's labels, added to train

    def __post_init__(self) -> None:
        check_range("labels_per_class", self.labels_per_class, low=1, integer=True)


@dataclass(frozen=True)
class RunOptions:
    """How a run computes and where it may write: the seed, the precisions, the extraction engine, the embedding
    cache, the run folder's rules (resume, overwrite), calibration and where the training curves go.

    `precision` is what training and embedding for it compute in; the test metrics are measured at
    `evaluation_precision` (fp32 unless asked), which the manifest records with what `auto` resolved to, so that
    `evaluate` and `report` reproduce them exactly. `engine`: what computes a frozen backbone's embeddings (torch,
    onnx, openvino; auto: the fastest measured for the backbone on this CPU, see `headstart.extraction_engines`),
    recorded in the manifest. `overwrite`: write into an `out` folder holding files
    headstart did not write (still replacing only headstart's own). `calibrate`: temperature scaling on the
    validation split before testing, kept only when cross-validation on that split shows it helps (the manifest's
    calibration record says which and why). `logger`: what the training curves in OUT/logs are written as: "csv",
    "tensorboard" (event files) or "mlflow" (a run in OUT/logs/mlflow.db, or at MLFLOW_TRACKING_URI when set); it
    needs an output folder.
    """

    seed: int = setting(0, "Seeds the splits, the order of training and new weights.")
    precision: str = setting("auto", "auto (bfloat16 where fast), fp32 or bf16.")
    evaluation_precision: str = setting(EVALUATION_PRECISION, "What the test metrics are measured at: fp32 (the "
                                        "default, as `evaluate` and the ONNX graph), auto or bf16.")
    engine: str = setting("auto", "What computes a frozen backbone's embeddings: torch, onnx, openvino, or auto (the "
                                  "fastest measured for the backbone on this CPU; kept).")
    cache: bool = setting(True, "Reuse cached embeddings of a frozen backbone.")
    resume: bool = setting(False, "Continue an interrupted run from its last checkpoint (fit: a finetune run; "
                                  "pretrain: the run in OUT.run/, or extend it with a larger budget).")
    overwrite: bool = setting(False, "Write into an --out folder that holds other files (only headstart's own "
                                     "model/, metrics.json, checkpoints/, logs/ are replaced).")
    calibrate: bool = setting(True, "Calibrate the probabilities (temperature scaling on the validation split); "
                                    "--no-calibrate keeps the raw softmax.")
    logger: str = setting("csv", LOGGER_HELP)

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("evaluation_precision", self.evaluation_precision, PRECISIONS)
        check_engine(self.engine)
        check_range("seed", self.seed, low=0, integer=True)
        check_logger(self.logger)


@dataclass(frozen=True)
class TaskOptions:
    """What is predicted, and the task's settings (None: the task's default; a setting that does not apply to the
    task is an error).

    "classification": one class per item; "multilabel": any number of labels per item (a label cell holds them
    joined by `label_separator`, "|" by default; per-label thresholds are tuned on the validation split);
    "regression": the numeric `target` column(s), e.g. "valence" or "valence,arousal" (`regression_loss` mse or
    huber; prediction intervals of `coverage`, 0.9 by default, by split conformal prediction); "tokens": a tag
    per word, for named entities (CoNLL files or a table of `tokens` and `tags` lists; chosen by itself for CoNLL
    files; `repair_tags` starts an entity at an I- tag that continues none). The task's settings are recorded in
    the model.
    """

    name: str | None = setting(None, "What to predict: classification (one class per item; the default), "
                                     "multilabel (any number of labels per item, joined in the label cell by "
                                     "--label-separator), regression (the numeric --target columns) or tokens (a "
                                     "tag per word, named entities; the default for CoNLL files).", flag="task")
    label_separator: str | None = setting(None, "multilabel: what joins an item's labels in its label cell "
                                                "(default |).")
    target: str | list[str] | None = setting(None, "regression: the numeric column(s) to predict, comma-separated (default: "
                                       "the label column found by name).")
    coverage: float | None = setting(None, "regression: coverage of the prediction intervals (split conformal on "
                                           "the validation split; default 0.9).")
    regression_loss: str | None = setting(None, "regression: mse (default) or huber (robust to a few wild targets).")
    repair_tags: bool | None = setting(None, "tokens: start an entity at an I- tag that continues none (an error "
                                             "otherwise).")

    def make(self, data: Any = None) -> Task:
        """The task object; without a name, the one `data` call for (CoNLL files: tokens), else classification."""
        from .data import data_task
        from .tasks import make_task

        return make_task(self.name or data_task(data) or "classification", **self.settings())

    def settings(self) -> dict[str, Any]:
        """The task's settings (all but its name), None where not given: what `make_task` takes."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}


Options = TypeVar("Options")


def sorted_into(options: Options | None, cls: type[Options], loose: dict[str, Any],
                renamed: dict[str, str] | None = None) -> Options:
    """`options` (or the defaults of `cls`) with the keyword arguments of `loose` that are its fields taken out of
    `loose` and set on it: the loose keywords `fit(..., seed=1, image_size=64)` that callers used before the
    option objects (`renamed`: a keyword that is another field's name, such as backbone -> name)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    renamed = renamed or {}
    given = {renamed.get(k, k): loose.pop(k) for k in list(loose) if renamed.get(k, k) in names}
    base = options if options is not None else cls()
    return dataclasses.replace(base, **given) if given else base  # type: ignore[type-var]


def refuse_unknown(command: str, loose: dict[str, Any]) -> None:
    """A one-line error naming the keywords `sorted_into` left in `loose`: no option of `command`."""
    if loose:
        raise SettingsError(f"{command} has no option {', '.join(sorted(loose))}")


def backbone_options(backbone: str | BackboneOptions) -> BackboneOptions:
    """Backbone options from a name, or the options themselves."""
    return backbone if isinstance(backbone, BackboneOptions) else BackboneOptions(name=backbone)


def task_options(task: str | Task | TaskOptions | None) -> TaskOptions | Task:
    """Task options from a name (or None), or a Task object as it is."""
    return task if not (task is None or isinstance(task, str)) else TaskOptions(name=task)
